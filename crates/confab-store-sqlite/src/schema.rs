//! Numbered migrations, applied in order inside one transaction each; the schema
//! version is `PRAGMA user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: conversations, members with delivery cursors, the message log.
    "CREATE TABLE conversations (
        app TEXT NOT NULL,
        id TEXT NOT NULL,
        kind INTEGER NOT NULL,
        creator TEXT NOT NULL,
        unique_key TEXT,
        attrs TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_ts INTEGER NOT NULL DEFAULT 0,
        last_mid TEXT,
        last_from TEXT,
        last_data TEXT,
        PRIMARY KEY (app, id)
    );
    CREATE UNIQUE INDEX conversations_unique ON conversations (app, unique_key) WHERE unique_key IS NOT NULL;
    CREATE TABLE members (
        app TEXT NOT NULL,
        cid TEXT NOT NULL,
        client TEXT NOT NULL,
        cursor_ts INTEGER NOT NULL DEFAULT 0,
        joined_at INTEGER NOT NULL,
        UNIQUE (app, cid, client)
    );
    CREATE INDEX members_by_client ON members (app, client);
    CREATE TABLE messages (
        app TEXT NOT NULL,
        cid TEXT NOT NULL,
        ts INTEGER NOT NULL,
        id TEXT NOT NULL,
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        receipt INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (app, cid, ts)
    ) WITHOUT ROWID;",
    // 2: read positions for unread counts (protocol version 3).
    "ALTER TABLE members ADD COLUMN read_ts INTEGER NOT NULL DEFAULT 0;",
    // 3: mute (do-not-disturb) per member; expiry of temporary conversations.
    "ALTER TABLE members ADD COLUMN muted INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE conversations ADD COLUMN expires_at INTEGER;",
    // 4: edits and recalls; looking a message up by id.
    "ALTER TABLE messages ADD COLUMN patched_at INTEGER;
     CREATE INDEX messages_by_id ON messages (app, cid, id);",
    // 5: member roles, shut-up members, blocked clients.
    "ALTER TABLE members ADD COLUMN role TEXT;
     ALTER TABLE members ADD COLUMN shut_up INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE blocked (
        app TEXT NOT NULL,
        cid TEXT NOT NULL,
        client TEXT NOT NULL,
        PRIMARY KEY (app, cid, client)
     ) WITHOUT ROWID;",
    // 6: binary bodies (stored as base64) and mentions.
    "ALTER TABLE messages ADD COLUMN binary INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE messages ADD COLUMN mention_all INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE messages ADD COLUMN mention_pids TEXT;",
    // 7: finding edits and recalls newer than a client's lastPatchTime.
    "CREATE INDEX messages_patched ON messages (app, cid, patched_at) WHERE patched_at IS NOT NULL;",
    // 8: the REST API's history of the whole app and of one sender.
    "CREATE INDEX messages_by_ts ON messages (app, ts);
     CREATE INDEX messages_by_sender ON messages (app, sender, ts);",
    // 9: the hook outbox: notifying hook calls not yet delivered (seq: the order stored).
    "CREATE TABLE hook_outbox (
        seq INTEGER PRIMARY KEY,
        app TEXT NOT NULL,
        key TEXT NOT NULL,
        hook TEXT NOT NULL,
        params TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due_at INTEGER NOT NULL,
        UNIQUE (app, key)
     );
     CREATE INDEX hook_outbox_due ON hook_outbox (due_at, seq);",
    // 10: the client's token of a message (`dt`): a re-send is answered with the
    // message stored first, after a restart too.
    "ALTER TABLE messages ADD COLUMN dedupe TEXT;
     CREATE UNIQUE INDEX messages_dedupe ON messages (app, cid, sender, dedupe) WHERE dedupe IS NOT NULL;",
    // 11: marks on clients apart from membership (a client's own blacklist of
    // conversations, temporary silences, chat rooms' shut-up clients and managers).
    "CREATE TABLE marks (
        app TEXT NOT NULL,
        cid TEXT NOT NULL,
        kind INTEGER NOT NULL,
        client TEXT NOT NULL,
        until INTEGER,
        PRIMARY KEY (app, cid, kind, client)
     ) WITHOUT ROWID;
     CREATE INDEX marks_by_client ON marks (app, client, kind, cid);",
    // 12: targeted messages of service conversations: the recipients a message names
    // (a JSON array; NULL: every member), and the position of the conversation's last
    // message when a targeted message came after it (NULL: `last_ts`). Targeted
    // messages stored by earlier builds, one copy per recipient in a log
    // `<cid>:to:<client>`, become one message of the conversation's log naming them all,
    // at the first copy's position and with the copy edited last; one whose position
    // the log already holds stays where it was.
    "ALTER TABLE messages ADD COLUMN recipients TEXT;
     ALTER TABLE conversations ADD COLUMN shown_ts INTEGER;
     CREATE TEMP TABLE targeted AS
        SELECT m.app, c.id AS conv, substr(m.cid, length(c.id) + 5) AS client, m.ts, m.id, m.sender, m.body,
               m.receipt, m.patched_at, m.binary, m.mention_all, m.mention_pids
          FROM conversations c JOIN messages m
            ON m.app = c.app AND m.cid >= c.id || ':to:' AND m.cid < c.id || ':to;'
         WHERE c.kind = 3;
     CREATE INDEX temp.targeted_by_id ON targeted (app, conv, id);
     INSERT OR IGNORE INTO messages
        (app, cid, ts, id, sender, body, receipt, patched_at, binary, mention_all, mention_pids, recipients)
     SELECT t.app, t.conv,
            (SELECT MIN(u.ts) FROM targeted u WHERE u.app = t.app AND u.conv = t.conv AND u.id = t.id),
            t.id, t.sender, t.body, t.receipt, t.patched_at, t.binary, t.mention_all, t.mention_pids,
            (SELECT json_group_array(v.client) FROM (
                SELECT DISTINCT u.client FROM targeted u
                 WHERE u.app = t.app AND u.conv = t.conv AND u.id = t.id ORDER BY u.client) v)
       FROM targeted t
      WHERE t.rowid = (SELECT u.rowid FROM targeted u WHERE u.app = t.app AND u.conv = t.conv AND u.id = t.id
                        ORDER BY COALESCE(u.patched_at, 0) DESC, u.client LIMIT 1);
     DELETE FROM messages
      WHERE (app, cid, ts) IN (
            SELECT t.app, t.conv || ':to:' || t.client, t.ts FROM targeted t
             WHERE EXISTS (SELECT 1 FROM messages g WHERE g.app = t.app AND g.cid = t.conv AND g.id = t.id
                              AND g.recipients IS NOT NULL));
     UPDATE conversations
        SET shown_ts = last_ts,
            last_ts = (SELECT MAX(g.ts) FROM messages g WHERE g.app = conversations.app AND g.cid = conversations.id)
      WHERE kind = 3
        AND (SELECT MAX(g.ts) FROM messages g WHERE g.app = conversations.app AND g.cid = conversations.id) > last_ts;
     DROP TABLE temp.targeted;",
];

/// Brings the database to the newest schema.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let current: usize = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
