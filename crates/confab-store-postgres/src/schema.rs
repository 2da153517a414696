//! Numbered migrations, applied in order, one transaction each, recorded in
//! `schema_migrations`. Several nodes may start at once: a transaction-scoped advisory
//! lock lets one of them migrate while the others wait, then find nothing left to do.

use tokio_postgres::Client;

/// The advisory lock key migrations hold (an arbitrary constant: "confab" in ASCII).
const MIGRATION_LOCK: i64 = 0x636f_6e66_6162;

/// Identifier columns compare byte-wise (`COLLATE "C"`): orders the contract states
/// ("sorted by client id", "then conversation id") are those of Rust strings, whatever
/// the database's default collation, and byte comparison is the cheaper one.
const MIGRATIONS: &[&str] = &[
    // 1: conversations with their position head, members with delivery cursors and read
    // positions, blocked clients, the message log, heads of conversation-less logs.
    r#"
    CREATE TABLE conversations (
        app TEXT COLLATE "C" NOT NULL,
        id TEXT COLLATE "C" NOT NULL,
        kind BIGINT NOT NULL,
        creator TEXT NOT NULL,
        unique_key TEXT COLLATE "C",
        attrs TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        expires_at BIGINT,
        -- The head: newest position, the one before it, and the dense sequence number of
        -- the newest message. Appends lock this row to assign the next position.
        last_ts BIGINT NOT NULL DEFAULT 0,
        prev_ts BIGINT NOT NULL DEFAULT 0,
        seq BIGINT NOT NULL DEFAULT 0,
        last_mid TEXT,
        last_from TEXT,
        last_data BYTEA,
        PRIMARY KEY (app, id)
    );
    CREATE UNIQUE INDEX conversations_unique ON conversations (app, unique_key) WHERE unique_key IS NOT NULL;
    CREATE INDEX conversations_created ON conversations (app, created_at);
    CREATE TABLE members (
        app TEXT COLLATE "C" NOT NULL,
        cid TEXT COLLATE "C" NOT NULL,
        client TEXT COLLATE "C" NOT NULL,
        joined BIGINT GENERATED ALWAYS AS IDENTITY,
        cursor_ts BIGINT NOT NULL DEFAULT 0,
        read_ts BIGINT NOT NULL DEFAULT 0,
        role TEXT,
        muted BOOLEAN NOT NULL DEFAULT FALSE,
        shut_up BOOLEAN NOT NULL DEFAULT FALSE,
        PRIMARY KEY (app, cid, client)
    );
    CREATE INDEX members_by_client ON members (app, client);
    CREATE TABLE blocked (
        app TEXT COLLATE "C" NOT NULL,
        cid TEXT COLLATE "C" NOT NULL,
        client TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (app, cid, client)
    );
    CREATE TABLE messages (
        app TEXT COLLATE "C" NOT NULL,
        cid TEXT COLLATE "C" NOT NULL,
        ts BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        id TEXT COLLATE "C" NOT NULL,
        sender TEXT COLLATE "C" NOT NULL,
        -- Bytes, not TEXT: PostgreSQL's text refuses U+0000, which a JSON string may hold.
        body BYTEA NOT NULL,
        receipt BOOLEAN NOT NULL DEFAULT FALSE,
        is_binary BOOLEAN NOT NULL DEFAULT FALSE,
        mention_all BOOLEAN NOT NULL DEFAULT FALSE,
        mention_pids TEXT[],
        -- `_lctype` of a JSON-object body when it is an integer, for the history filter.
        lctype BIGINT,
        patched_at BIGINT,
        PRIMARY KEY (app, cid, ts)
    );
    CREATE UNIQUE INDEX messages_by_seq ON messages (app, cid, seq);
    CREATE INDEX messages_by_id ON messages (app, cid, id);
    CREATE INDEX messages_patched ON messages (app, cid, patched_at) WHERE patched_at IS NOT NULL;
    -- Positions of message logs that have no conversation row (a system conversation's
    -- `<cid>:inbox`), assigned the same way.
    CREATE TABLE heads (
        app TEXT COLLATE "C" NOT NULL,
        cid TEXT COLLATE "C" NOT NULL,
        last_ts BIGINT NOT NULL,
        prev_ts BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (app, cid)
    );
    "#,
    // 2: when each member joined (the REST API's subscription times); the app's history
    // by time and by sender. Earlier members count as joined when their conversation
    // was created.
    r#"
    ALTER TABLE members ADD COLUMN joined_at BIGINT;
    UPDATE members m SET joined_at = c.created_at FROM conversations c WHERE c.app = m.app AND c.id = m.cid;
    CREATE INDEX messages_by_ts ON messages (app, ts);
    CREATE INDEX messages_by_sender ON messages (app, sender, ts);
    "#,
    // 3: the hook outbox: notifying hook calls not yet delivered, one per (app, key);
    // `seq` is the order they were stored (ties of `due_at` come in it).
    r#"
    CREATE TABLE hook_outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        app TEXT COLLATE "C" NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        hook TEXT NOT NULL,
        params TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        due_at BIGINT NOT NULL,
        PRIMARY KEY (app, key)
    );
    CREATE INDEX hook_outbox_due ON hook_outbox (due_at, seq);
    "#,
    // 4: the client's token of a message (`dt`): a re-send through any node, after any
    // restart, is answered with the message stored first.
    r#"
    ALTER TABLE messages ADD COLUMN dedupe TEXT COLLATE "C";
    CREATE UNIQUE INDEX messages_dedupe ON messages (app, cid, sender, dedupe) WHERE dedupe IS NOT NULL;
    "#,
    // 5: marks on clients apart from membership (a client's own blacklist of
    // conversations, temporary silences, chat rooms' shut-up clients and managers).
    r#"
    CREATE TABLE marks (
        app TEXT COLLATE "C" NOT NULL,
        cid TEXT COLLATE "C" NOT NULL,
        kind BIGINT NOT NULL,
        client TEXT COLLATE "C" NOT NULL,
        until BIGINT,
        PRIMARY KEY (app, cid, kind, client)
    );
    CREATE INDEX marks_by_client ON marks (app, client, kind, cid);
    "#,
    // 6: targeted messages of service conversations: the recipients a message names
    // (NULL: every member), and the position of the conversation's last message when a
    // targeted message came after it (NULL: `last_ts`). Targeted messages stored by
    // earlier builds, one copy per recipient in a log `<cid>:to:<client>`, become one
    // message of the conversation's log naming them all, at the first copy's position
    // and with the copy edited last (sequence numbers after the log's); one whose
    // position the log already holds stays where it was.
    r#"
    ALTER TABLE messages ADD COLUMN recipients TEXT[] COLLATE "C";
    ALTER TABLE conversations ADD COLUMN shown_ts BIGINT;
    CREATE TEMP TABLE targeted ON COMMIT DROP AS
        SELECT m.app, c.id AS conv, substr(m.cid, length(c.id) + 5) AS client, m.ts, m.id, m.sender, m.body,
               m.receipt, m.is_binary, m.mention_all, m.mention_pids, m.lctype, m.patched_at
          FROM conversations c JOIN messages m
            ON m.app = c.app AND m.cid >= c.id || ':to:' AND m.cid < c.id || ':to;'
         WHERE c.kind = 3;
    CREATE TEMP TABLE merged ON COMMIT DROP AS
        SELECT DISTINCT ON (t.app, t.conv, t.id)
               t.app, t.conv, t.id, t.sender, t.body, t.receipt, t.is_binary, t.mention_all, t.mention_pids,
               t.lctype, t.patched_at, g.ts, g.recipients
          FROM targeted t
          JOIN (SELECT app, conv, id, min(ts) AS ts, array_agg(DISTINCT client ORDER BY client) AS recipients
                  FROM targeted GROUP BY app, conv, id) g
            ON g.app = t.app AND g.conv = t.conv AND g.id = t.id
         ORDER BY t.app, t.conv, t.id, t.patched_at DESC NULLS LAST, t.client;
    DELETE FROM merged m
     WHERE EXISTS (SELECT 1 FROM messages g WHERE g.app = m.app AND g.cid = m.conv AND g.ts = m.ts)
        OR EXISTS (SELECT 1 FROM merged o
                    WHERE o.app = m.app AND o.conv = m.conv AND o.ts = m.ts AND o.id < m.id);
    INSERT INTO messages (app, cid, ts, seq, id, sender, body, receipt, is_binary, mention_all, mention_pids,
                          lctype, patched_at, recipients)
    SELECT m.app, m.conv, m.ts, c.seq + row_number() OVER (PARTITION BY m.app, m.conv ORDER BY m.ts), m.id,
           m.sender, m.body, m.receipt, m.is_binary, m.mention_all, m.mention_pids, m.lctype, m.patched_at,
           m.recipients
      FROM merged m JOIN conversations c ON c.app = m.app AND c.id = m.conv;
    DELETE FROM messages g USING targeted t, merged m
     WHERE g.app = t.app AND g.cid = t.conv || ':to:' || t.client AND g.ts = t.ts
       AND m.app = t.app AND m.conv = t.conv AND m.id = t.id;
    DELETE FROM heads h
     WHERE strpos(h.cid, ':to:') > 0
       AND NOT EXISTS (SELECT 1 FROM messages g WHERE g.app = h.app AND g.cid = h.cid);
    UPDATE conversations c
       SET seq = c.seq + n.moved,
           shown_ts = CASE WHEN n.top > c.last_ts THEN c.last_ts ELSE c.shown_ts END,
           last_ts = GREATEST(c.last_ts, n.top)
      FROM (SELECT app, conv, count(*) AS moved, max(ts) AS top FROM merged GROUP BY app, conv) n
     WHERE c.app = n.app AND c.id = n.conv;
    "#,
];

/// The newest schema version this build knows.
pub(crate) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database refused or could not be reached.
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The database was migrated by a newer Confab.
    #[error("the database has schema version {found}, newer than this build's {known}: upgrade confab")]
    Newer {
        /// The database's version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
}

/// Brings the database to the newest schema; returns how many migrations ran. Refuses
/// a database migrated by a newer Confab (a version this build does not know).
pub(crate) async fn migrate(client: &mut Client) -> Result<usize, MigrateError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let current: i64 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
    tx.commit().await?;
    if current > LATEST {
        return Err(MigrateError::Newer { found: current, known: LATEST });
    }
    let mut ran = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= current {
            continue;
        }
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        // Another node may have applied it while this one waited for the lock.
        let done = tx.query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[&version]).await?;
        if done.is_none() {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[&version]).await?;
            ran += 1;
        }
        tx.commit().await?;
    }
    Ok(ran)
}
