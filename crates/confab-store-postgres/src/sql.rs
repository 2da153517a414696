//! The SQL the store runs, in one place. Every write is one statement (data-modifying
//! CTEs where a write touches several tables), so a batch is a list of statements the
//! writer pipelines on one connection, and a write that must fail alone (an existing
//! id, a missing position) says so in its result rows instead of aborting the
//! transaction with an error.

/// The statement of [`APPEND`], with `$extra` (more CTEs, which may read `p`, the
/// assigned position) before its final `SELECT`.
macro_rules! append {
    ($extra:literal) => {
        concat!(
            "
WITH d AS (
    SELECT id, ts FROM messages
     WHERE $12::text IS NOT NULL
       AND app = $1::text AND cid = $2::text AND sender = $5::text AND dedupe = $12::text),
c AS (
    UPDATE conversations
       SET prev_ts = last_ts, last_ts = GREATEST(last_ts + 1, $3::bigint), seq = seq + 1,
           shown_ts = CASE WHEN $13::text[] IS NULL THEN NULL ELSE COALESCE(shown_ts, last_ts) END,
           last_mid = CASE WHEN $13::text[] IS NULL THEN $4::text ELSE last_mid END,
           last_from = CASE WHEN $13::text[] IS NULL THEN $5::text ELSE last_from END,
           last_data = CASE WHEN $13::text[] IS NULL THEN $6::bytea ELSE last_data END
     WHERE app = $1::text AND id = $2::text AND NOT EXISTS (SELECT 1 FROM d)
 RETURNING last_ts, prev_ts, seq),
h AS (
    INSERT INTO heads AS h (app, cid, last_ts, prev_ts, seq)
    SELECT $1::text, $2::text, GREATEST($3::bigint, 1), 0, 1
     WHERE NOT EXISTS (SELECT 1 FROM c) AND NOT EXISTS (SELECT 1 FROM d)
    ON CONFLICT (app, cid) DO UPDATE
       SET prev_ts = h.last_ts, last_ts = GREATEST(h.last_ts + 1, EXCLUDED.last_ts), seq = h.seq + 1
 RETURNING last_ts, prev_ts, seq),
p AS (SELECT last_ts, prev_ts, seq FROM c UNION ALL SELECT last_ts, prev_ts, seq FROM h),
i AS (
    INSERT INTO messages (app, cid, ts, seq, id, sender, body, receipt, is_binary, mention_all, mention_pids, lctype,
                          dedupe, recipients)
    SELECT $1::text, $2::text, p.last_ts, p.seq, $4::text, $5::text, $6::bytea, $7::boolean, $8::boolean,
           $9::boolean, $10::text[], $11::bigint, $12::text, $13::text[]
      FROM p)",
            $extra,
            "
SELECT last_ts, prev_ts, seq, NULL::text FROM p
UNION ALL SELECT ts, 0::bigint, 0::bigint, id FROM d"
        )
    };
}

/// Assigns the next position and inserts the message, atomically: the `UPDATE` locks
/// the conversation row until the transaction ends, so writers on every node take
/// turns on it and the position comes from the database. `ts = max(proposed,
/// last_ts + 1)`; `prev_ts` is the position before it; `seq` counts the conversation's
/// messages densely (1, 2, 3, …) so a reader can see a gap. A message log without a
/// conversation row (a system conversation's inbox) keeps its head in `heads`.
///
/// A targeted message (`$13`, its recipients; NULL for a message to every member)
/// moves the conversation's position but not its last message: `shown_ts` keeps the
/// last message's position.
///
/// A message stored with a dedupe token (`$12`, NULL for none) is a re-send when its
/// sender already stored one with the same token in the conversation: then nothing is
/// written and the row returned is `(ts, 0, 0, id)` of that message. The check reads
/// the statement's snapshot, so a batch with a dedupe token locks its conversation
/// rows first ([`LOCK_CONVERSATIONS`]): the snapshot then holds every other node's
/// committed message of the conversation. A unique index backs it.
///
/// $1 app, $2 cid, $3 proposed ts, $4 id, $5 sender, $6 body, $7 receipt, $8 binary,
/// $9 mention_all, $10 mention_pids, $11 lctype, $12 dedupe token, $13 recipients. Returns
/// `(ts, prev_ts, seq, NULL)`, or the re-sent message's `(ts, 0, 0, id)`.
pub(crate) const APPEND: &str = append!("");

/// [`APPEND`] storing the message's hook calls in the outbox with it (a key the app
/// holds keeps its first call). A call reports the assigned position rather than the
/// proposed one: `tail` is its parameters without their `timestamp`, so that
/// `{"timestamp":<ts>` + tail is the same object reporting `ts` (NULL: the call does
/// not report the proposed position and is stored as it is). Plain text, not `jsonb`:
/// `jsonb` refuses a `\u0000` a message's content may hold.
///
/// $14 apps, $15 keys, $16 hooks, $17 params, $18 tails, $19 created_at.
pub(crate) const APPEND_NOTIFY: &str = append!(
    ",
o AS (
    INSERT INTO hook_outbox (app, key, hook, params, created_at, due_at)
    SELECT k.app, k.key, k.hook,
           CASE WHEN p.last_ts = $3::bigint OR k.tail IS NULL THEN k.params
                ELSE '{\"timestamp\":' || p.last_ts::text || k.tail END,
           k.created_at, k.created_at
      FROM p, unnest($14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::bigint[])
           WITH ORDINALITY AS k(app, key, hook, params, tail, created_at, o)
     ORDER BY k.o
    ON CONFLICT (app, key) DO NOTHING)"
);

/// Locks the conversation rows a batch touches, in one order on every node, before the
/// batch's statements lock them one by one in call order: two nodes' batches holding
/// each other's conversations would otherwise deadlock. $1 apps, $2 ids.
pub(crate) const LOCK_CONVERSATIONS: &str = "
SELECT 1 FROM conversations
 WHERE (app, id) IN (SELECT a, i FROM unnest($1::text[], $2::text[]) AS k(a, i))
 ORDER BY app, id FOR UPDATE";

/// The statement of [`CREATE_CONVERSATION`], with `$extra` CTEs (which may read `c`,
/// the conversation created) before its final `SELECT`.
macro_rules! create_conversation {
    ($extra:literal) => {
        concat!(
            "
WITH c AS (
    INSERT INTO conversations (app, id, kind, creator, unique_key, attrs, created_at, updated_at, expires_at)
    VALUES ($1::text, $2::text, $3::bigint, $4::text, $5::text, $6::text, $7::bigint, $8::bigint, $9::bigint)
    ON CONFLICT DO NOTHING
 RETURNING app, id),
m AS (
    INSERT INTO members (app, cid, client, joined_at)
    SELECT c.app, c.id, u.client, $7::bigint
      FROM c, unnest($10::text[]) WITH ORDINALITY AS u(client, o) ORDER BY u.o
    ON CONFLICT DO NOTHING)",
            $extra,
            "
SELECT 1 FROM c"
        )
    };
}

/// $1 app, $2 id, $3 kind, $4 creator, $5 unique_key, $6 attrs, $7 created_at,
/// $8 updated_at, $9 expires_at, $10 members (distinct, in order). One row when created;
/// none when the id or the unique key is taken.
pub(crate) const CREATE_CONVERSATION: &str = create_conversation!("");

/// [`CREATE_CONVERSATION`] storing hook calls with the conversation, only when it is
/// created. $11 apps, $12 keys, $13 hooks, $14 params, $15 created_at.
pub(crate) const CREATE_CONVERSATION_NOTIFY: &str = create_conversation!(
    ",
o AS (
    INSERT INTO hook_outbox (app, key, hook, params, created_at, due_at)
    SELECT k.app, k.key, k.hook, k.params, k.created_at, k.created_at
      FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::bigint[])
           WITH ORDINALITY AS k(app, key, hook, params, created_at, o)
     WHERE EXISTS (SELECT 1 FROM c)
     ORDER BY k.o
    ON CONFLICT (app, key) DO NOTHING)"
);

/// $1 app, $2 cid, $3 attrs, $4 updated_at.
pub(crate) const SET_ATTRIBUTES: &str = "UPDATE conversations SET attrs = $3::text, updated_at = $4::bigint WHERE app = $1::text AND id = $2::text";

/// The hook calls of a membership write, as a CTE: $5 apps, $6 keys, $7 hooks,
/// $8 params, $9 created_at (a key the app holds keeps its first call).
macro_rules! member_calls {
    () => {
        ",
o AS (
    INSERT INTO hook_outbox (app, key, hook, params, created_at, due_at)
    SELECT k.app, k.key, k.hook, k.params, k.created_at, k.created_at
      FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[])
           WITH ORDINALITY AS k(app, key, hook, params, created_at, o)
     ORDER BY k.o
    ON CONFLICT (app, key) DO NOTHING)"
    };
}

/// The statement of [`ADD_MEMBERS`] with `$extra` CTEs.
macro_rules! add_members {
    ($extra:expr) => {
        concat!(
            "
WITH m AS (
    INSERT INTO members (app, cid, client, cursor_ts, joined_at)
    SELECT c.app, c.id, u.client, c.last_ts, $4::bigint
      FROM conversations c, unnest($3::text[]) WITH ORDINALITY AS u(client, o)
     WHERE c.app = $1::text AND c.id = $2::text
     ORDER BY u.o
    ON CONFLICT DO NOTHING)",
            $extra,
            "
UPDATE conversations SET updated_at = $4::bigint WHERE app = $1::text AND id = $2::text"
        )
    };
}

/// New members start their cursor at the newest message. $1 app, $2 cid, $3 members
/// (distinct, in order), $4 updated_at.
pub(crate) const ADD_MEMBERS: &str = add_members!("");

/// [`ADD_MEMBERS`] storing hook calls with it (see `member_calls!` for $5-$9).
pub(crate) const ADD_MEMBERS_NOTIFY: &str = add_members!(member_calls!());

/// The statement of [`REMOVE_MEMBERS`] with `$extra` CTEs.
macro_rules! remove_members {
    ($extra:expr) => {
        concat!(
            "
WITH d AS (DELETE FROM members WHERE app = $1::text AND cid = $2::text AND client = ANY($3::text[]))",
            $extra,
            "
UPDATE conversations SET updated_at = $4::bigint WHERE app = $1::text AND id = $2::text"
        )
    };
}

/// $1 app, $2 cid, $3 members, $4 updated_at.
pub(crate) const REMOVE_MEMBERS: &str = remove_members!("");

/// [`REMOVE_MEMBERS`] storing hook calls with it (see `member_calls!` for $5-$9).
pub(crate) const REMOVE_MEMBERS_NOTIFY: &str = remove_members!(member_calls!());

/// Hook calls for events with no other write. $1 apps, $2 keys, $3 hooks, $4 params,
/// $5 created_at.
pub(crate) const OUTBOX_PUT: &str = "
INSERT INTO hook_outbox (app, key, hook, params, created_at, due_at)
SELECT k.app, k.key, k.hook, k.params, k.created_at, k.created_at
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
       WITH ORDINALITY AS k(app, key, hook, params, created_at, o)
 ORDER BY k.o
ON CONFLICT (app, key) DO NOTHING";

/// Due calls, earliest due first, ties in the order stored. $1 now, $2 limit.
pub(crate) const OUTBOX_DUE: &str = "
SELECT app, key, hook, params, created_at, attempts, due_at FROM hook_outbox
 WHERE due_at <= $1::bigint ORDER BY due_at, seq LIMIT $2::bigint";

/// How many calls the outbox holds, counting at most $1.
pub(crate) const OUTBOX_LEN: &str = "
SELECT count(*) FROM (SELECT 1 FROM hook_outbox LIMIT $1::bigint) AS o";

/// [`OUTBOX_DUE`]'s calls, leased: their next attempt moves to $3 (lease_until). Rows
/// another node is leasing at this moment are skipped, not waited for. Returns the
/// due time before the lease and `seq`, for the order. $1 now, $2 limit, $3 lease_until.
pub(crate) const OUTBOX_CLAIM: &str = "
WITH d AS (
    SELECT app, key, due_at, seq FROM hook_outbox
     WHERE due_at <= $1::bigint ORDER BY due_at, seq LIMIT $2::bigint
       FOR UPDATE SKIP LOCKED)
UPDATE hook_outbox h SET due_at = $3::bigint FROM d
 WHERE h.app = d.app AND h.key = d.key
RETURNING h.app, h.key, h.hook, h.params, h.created_at, h.attempts, d.due_at, d.seq";

/// $1 app, $2 key.
pub(crate) const OUTBOX_DONE: &str = "DELETE FROM hook_outbox WHERE app = $1::text AND key = $2::text";

/// $1 app, $2 key, $3 attempts, $4 due_at.
pub(crate) const OUTBOX_RETRY: &str = "UPDATE hook_outbox SET attempts = $3::bigint, due_at = $4::bigint
 WHERE app = $1::text AND key = $2::text";

/// $1 app, $2 cid, $3 client, $4 ts.
pub(crate) const SAVE_READ: &str = "UPDATE members SET read_ts = $4::bigint
 WHERE app = $1::text AND cid = $2::text AND client = $3::text AND read_ts < $4::bigint";

/// $1 app, $2 cid, $3 client, $4 role.
pub(crate) const SET_ROLE: &str =
    "UPDATE members SET role = $4::text WHERE app = $1::text AND cid = $2::text AND client = $3::text";

/// $1 app, $2 cid, $3 clients, $4 on.
pub(crate) const SET_SHUT_UP: &str = "UPDATE members SET shut_up = $4::boolean
 WHERE app = $1::text AND cid = $2::text AND client = ANY($3::text[])";

/// $1 app, $2 cid, $3 client, $4 muted.
pub(crate) const SET_MUTED: &str =
    "UPDATE members SET muted = $4::boolean WHERE app = $1::text AND cid = $2::text AND client = $3::text";

/// Blocks clients (distinct) and removes those who are members. $1 app, $2 cid, $3 clients.
pub(crate) const BLOCK: &str = "
WITH b AS (
    INSERT INTO blocked (app, cid, client) SELECT $1::text, $2::text, u FROM unnest($3::text[]) AS u
    ON CONFLICT DO NOTHING)
DELETE FROM members WHERE app = $1::text AND cid = $2::text AND client = ANY($3::text[])";

/// $1 app, $2 cid, $3 clients.
pub(crate) const UNBLOCK: &str =
    "DELETE FROM blocked WHERE app = $1::text AND cid = $2::text AND client = ANY($3::text[])";

/// Puts a mark on clients (distinct), replacing theirs. $1 app, $2 cid, $3 kind,
/// $4 clients, $5 until.
pub(crate) const MARK: &str = "
INSERT INTO marks (app, cid, kind, client, until)
SELECT $1::text, $2::text, $3::bigint, u, $5::bigint FROM unnest($4::text[]) AS u
ON CONFLICT (app, cid, kind, client) DO UPDATE SET until = EXCLUDED.until";

/// $1 app, $2 cid, $3 kind, $4 clients.
pub(crate) const UNMARK: &str = "DELETE FROM marks
 WHERE app = $1::text AND cid = $2::text AND kind = $3::bigint AND client = ANY($4::text[])";

/// $1 app, $2 cid.
pub(crate) const MARKS: &str =
    "SELECT kind, client, until FROM marks WHERE app = $1::text AND cid = $2::text ORDER BY kind, client";

/// $1 app, $2 client, $3 kind, $4 after (exclusive; NULL: from the start), $5 limit.
pub(crate) const CLIENT_MARKS: &str = "SELECT cid FROM marks
 WHERE app = $1::text AND client = $2::text AND kind = $3::bigint AND ($4::text IS NULL OR cid > $4::text)
 ORDER BY cid LIMIT $5::bigint";

/// $1 app, $2 client, $3 kind: how many marks of the kind the client carries.
pub(crate) const COUNT_CLIENT_MARKS: &str = "SELECT COUNT(*) FROM marks
 WHERE app = $1::text AND client = $2::text AND kind = $3::bigint";

/// $1 app, $2 cid, $3 ts, $4 body, $5 patched_at, $6 lctype, $7 binary (null: unchanged).
/// One row when the message exists.
pub(crate) const PATCH: &str = "
WITH u AS (
    UPDATE messages SET body = $4::bytea, patched_at = $5::bigint, lctype = $6::bigint,
           is_binary = COALESCE($7::boolean, is_binary)
     WHERE app = $1::text AND cid = $2::text AND ts = $3::bigint
 RETURNING ts),
c AS (
    UPDATE conversations SET last_data = $4::bytea
     WHERE app = $1::text AND id = $2::text AND COALESCE(shown_ts, last_ts) = $3::bigint
       AND EXISTS (SELECT 1 FROM u))
SELECT 1 FROM u";

/// Drops the conversation with its log and its side logs (`<cid>:…`: ids from
/// `<cid>:` up to `<cid>;`, ';' following ':'). $1 app, $2 cid, $3 `<cid>:`, $4 `<cid>;`.
pub(crate) const DELETE_CONVERSATION: &str = "
WITH a AS (DELETE FROM messages
            WHERE app = $1::text AND (cid = $2::text OR (cid >= $3::text AND cid < $4::text))),
b AS (DELETE FROM members WHERE app = $1::text AND cid = $2::text),
d AS (DELETE FROM blocked WHERE app = $1::text AND cid = $2::text),
k AS (DELETE FROM marks WHERE app = $1::text AND cid = $2::text),
e AS (DELETE FROM heads WHERE app = $1::text AND (cid = $2::text OR (cid >= $3::text AND cid < $4::text)))
DELETE FROM conversations WHERE app = $1::text AND id = $2::text";

/// Deletes one message; the conversation's head (last message, positions) stays.
/// $1 app, $2 cid, $3 ts.
pub(crate) const DELETE_MESSAGE: &str =
    "DELETE FROM messages WHERE app = $1::text AND cid = $2::text AND ts = $3::bigint";

/// Takes a client off a targeted message's recipients, deleting the message when it was
/// the last (the two conditions exclude each other on the row, which the first to
/// touch it locks). $1 app, $2 cid, $3 ts, $4 client.
pub(crate) const REMOVE_RECIPIENT: &str = "
WITH d AS (
    DELETE FROM messages
     WHERE app = $1::text AND cid = $2::text AND ts = $3::bigint AND recipients IS NOT NULL
       AND cardinality(array_remove(recipients, $4::text)) = 0)
UPDATE messages SET recipients = array_remove(recipients, $4::text)
 WHERE app = $1::text AND cid = $2::text AND ts = $3::bigint AND recipients IS NOT NULL
   AND cardinality(array_remove(recipients, $4::text)) > 0";

/// $1 app, $2 cid, $3 client.
pub(crate) const JOINED_AT: &str = "SELECT COALESCE(joined_at, 0) FROM members
 WHERE app = $1::text AND cid = $2::text AND client = $3::text";

/// $1 app, $2 cid.
pub(crate) const RELEASE_UNIQUE: &str =
    "UPDATE conversations SET unique_key = NULL WHERE app = $1::text AND id = $2::text";

/// Moves buffered delivery cursors forward, all in one statement. $1 apps, $2 cids,
/// $3 clients, $4 positions.
pub(crate) const SAVE_CURSORS: &str = "
UPDATE members m SET cursor_ts = v.ts
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS v(app, cid, client, ts)
 WHERE m.app = v.app AND m.cid = v.cid AND m.client = v.client AND m.cursor_ts < v.ts";

/// A conversation with its members, read in one statement; the `WHERE` is appended.
/// Column 7 is the last message's position (`shown_ts` when a targeted message came
/// after it).
pub(crate) const CONVERSATION: &str = "
SELECT c.id, c.kind, c.creator, c.unique_key, c.attrs, c.created_at, c.updated_at,
       COALESCE(c.shown_ts, c.last_ts), c.last_mid,
       c.last_from, c.last_data, c.expires_at, mm.members, mm.muted, mm.managers, mm.shut_up,
       ARRAY(SELECT b.client FROM blocked b WHERE b.app = c.app AND b.cid = c.id ORDER BY b.client) AS blocked
  FROM conversations c
  LEFT JOIN LATERAL (
    SELECT array_agg(m.client ORDER BY m.joined) AS members,
           array_agg(m.client ORDER BY m.joined) FILTER (WHERE m.muted) AS muted,
           array_agg(m.client ORDER BY m.joined) FILTER (WHERE m.role = 'Manager') AS managers,
           array_agg(m.client ORDER BY m.joined) FILTER (WHERE m.shut_up) AS shut_up
      FROM members m WHERE m.app = c.app AND m.cid = c.id) mm ON TRUE";

/// The columns [`crate::message_row`] reads, in its order.
pub(crate) const MESSAGE_COLUMNS: &str =
    "id, ts, sender, body, receipt, patched_at, is_binary, mention_all, mention_pids, recipients";

/// A client's cursors with each conversation's newest position. $1 app, $2 client.
pub(crate) const MEMBER_CURSORS: &str = "
SELECT m.cid, m.cursor_ts, c.last_ts FROM members m JOIN conversations c ON c.app = m.app AND c.id = m.cid
 WHERE m.app = $1::text AND m.client = $2::text";

/// $1 app, $2 cid.
pub(crate) const MEMBER_POSITIONS: &str =
    "SELECT client, cursor_ts, read_ts FROM members WHERE app = $1::text AND cid = $2::text ORDER BY joined";

/// Edits of the messages for the client. $1 app, $2 client, $3 since, $4 limit.
pub(crate) const PATCHED_SINCE: &str = "
SELECT g.cid, g.id, g.ts, g.sender, g.body, g.receipt, g.patched_at, g.is_binary, g.mention_all, g.mention_pids,
       g.recipients
  FROM members m JOIN messages g ON g.app = m.app AND g.cid = m.cid
 WHERE m.app = $1::text AND m.client = $2::text AND g.patched_at > $3::bigint
   AND (g.recipients IS NULL OR m.client = ANY(g.recipients))
 ORDER BY g.patched_at, g.cid, g.ts LIMIT $4::bigint";

/// Unread counts, newest conversation first: the messages for the client, and its last
/// message (a targeted one for it when one came after the conversation's). $1 app,
/// $2 client, $3 max.
pub(crate) const UNREAD: &str = "
SELECT cid, shown_ts, last_mid, last_from, last_data, unread, mentioned, nid, nts, nfrom, nbody FROM (
    SELECT m.cid, c.last_ts, COALESCE(c.shown_ts, c.last_ts) AS shown_ts, c.last_mid, c.last_from, c.last_data,
           (SELECT count(*) FROM messages g
             WHERE g.app = m.app AND g.cid = m.cid AND g.ts > m.read_ts AND g.sender <> m.client
               AND (g.recipients IS NULL OR m.client = ANY(g.recipients))) AS unread,
           EXISTS (SELECT 1 FROM messages g
             WHERE g.app = m.app AND g.cid = m.cid AND g.ts > m.read_ts AND g.sender <> m.client
               AND (g.recipients IS NULL OR m.client = ANY(g.recipients))
               AND (g.mention_all OR m.client = ANY(g.mention_pids))) AS mentioned,
           v.id AS nid, v.ts AS nts, v.sender AS nfrom, v.body AS nbody
      FROM members m JOIN conversations c ON c.app = m.app AND c.id = m.cid
      LEFT JOIN LATERAL (
        SELECT g.id, g.ts, g.sender, g.body FROM messages g
         WHERE c.shown_ts IS NOT NULL AND g.app = m.app AND g.cid = m.cid AND g.ts > c.shown_ts
           AND m.client = ANY(g.recipients)
         ORDER BY g.ts DESC LIMIT 1) v ON TRUE
     WHERE m.app = $1::text AND m.client = $2::text AND c.kind <> 2 AND c.last_ts > m.read_ts
) s WHERE s.unread > 0 ORDER BY s.last_ts DESC LIMIT $3::bigint";
