-- Incremental sync (CONTRACT 1.2, `GET /api/changes`) and the write mechanism written once
-- (issue 20). Every committed, successful write moves its user's change position by one:
--
-- - `users.change_seq` is the user's counter. A write increments it with an UPDATE of the
--   user's row, so the new position is taken under that row's lock, held until commit: the
--   write at position N+1 cannot take its position before the write at N committed, so a
--   reader that sees N+1 sees N (a timestamp has no such order: transactions commit out of
--   `now()` order). Lock order, everywhere: the task row first (by-id writes), then the user's
--   row; nothing takes them the other way round, so the new lock adds no deadlock.
-- - `tasks.change_seq` is the position of the task's latest change; a deletion leaves a record
--   in `task_deletions` with its own position.
-- - `users.history_purged_through` is the highest position of a purged deletion record: a sync
--   token below it may have missed a deletion the server no longer knows (410).
-- - `users.latest_deletion` is the position of the user's latest deletion: a user with no kept
--   deletion record (`latest_deletion` <= `history_purged_through`) has nothing to purge.
--
-- The four V5 writes repeated the request-key lookup, the key record and the purges; here they
-- are one PL/pgSQL function, `tasks_write_v2`, in which only the task step depends on the
-- operation. The V5 functions become thin wrappers over it (same signatures, so a release still
-- calling them keeps working during a deploy, and records changes too): the mechanism exists
-- once in the live database as well. `tests/changes.rs` checks both.

ALTER TABLE users
    ADD COLUMN IF NOT EXISTS change_seq BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS history_purged_through BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS latest_deletion BIGINT NOT NULL DEFAULT 0;

ALTER TABLE tasks ADD COLUMN IF NOT EXISTS change_seq BIGINT;

-- Existing tasks get positions 1..n per user, in the order they were last written, and each
-- user's counter starts at n.
UPDATE tasks SET change_seq = numbered.seq
FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY updated_at, id) AS seq
      FROM tasks) numbered
WHERE tasks.id = numbered.id;
UPDATE users SET change_seq = counted.n
FROM (SELECT user_id, count(*) AS n FROM tasks GROUP BY user_id) counted
WHERE users.id = counted.user_id;

-- No default: a write that forgot the position fails instead of hiding a task from every sync.
ALTER TABLE tasks ALTER COLUMN change_seq SET NOT NULL;

-- A page of changes walks the user's tasks by position.
CREATE INDEX IF NOT EXISTS tasks_user_change_idx ON tasks (user_id, change_seq);

-- The primary key is the index a page (and the purge) walks. No foreign key, like
-- `idempotency_keys`: the row is written under the user's row lock by the user's own delete,
-- and the check would cost every delete a trigger and a lookup (the API never deletes users).
CREATE TABLE IF NOT EXISTS task_deletions (
    user_id    TEXT        NOT NULL,
    change_seq BIGINT      NOT NULL,
    task_id    UUID        NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, change_seq)
);

-- Every write. Parameters: $1 operation ('create', 'update', 'toggle', 'delete'), $2 task id, $3
-- user id (sub), $4 email, $5 request key, $6 request hash, $7 request id, $8 key retention in
-- seconds, $9 the If-Match timestamps (NULL: no condition; by-id writes), $10 title, $11
-- description, $12 is_completed (update: NULL leaves it), $13 deletion history retention in
-- seconds. Returns at most one row, (outcome, task columns); no row means no such task (404).
-- The steps, in the contract's order of checks:
--
-- 1. the request key's record, if any, is the answer and nothing is written (`written` when
--    this very request made it — a resend —, `replayed` for the same request made earlier,
--    `key_reused` for another request);
-- 2. by-id writes lock the user's task (existence, 404) and check If-Match against the locked
--    version (412 with its timestamp); before either refusal the key is read once more, because
--    a concurrent copy of this very write may have committed while this one waited for the
--    lock (V5 answered 404 or 412 then);
-- 3. the user's counter moves (the create upserts the user row, just in time, as in V5; a
--    NULL email never overwrites a stored one) — only now, so 404, 412, 422 and replays move
--    nothing;
-- 4. the task step, the only part that depends on the operation, stamped with the position;
-- 5. the key is recorded with the answer (a concurrent copy of this write, same key, fails
--    here with a unique violation and reruns the call: see shared/src/tasks/sql.rs);
-- 6. purges, so retention needs no job: a few expired keys of anyone (SKIP LOCKED, never
--    waits), and up to four of this user's deletion records older than the history retention.
--    Only the writing user's: their row is already locked, so raising their
--    `history_purged_through` takes no other lock (purging other users' history would lock
--    their rows in arbitrary order). A user who never writes again keeps their last few
--    deletion records, which is harmless (they are small, and only make tokens valid longer).
--    Only when the user has kept records (`latest_deletion` > `history_purged_through`) is
--    the user's oldest record (by position) read, one index entry; only if it is past
--    the retention are the four oldest examined and those past it deleted. Records are written
--    in position order with `now()`, so they grow old in that order (within the length of a
--    transaction), and the purge never walks the history, however long it is.
CREATE OR REPLACE FUNCTION tasks_write_v2(
    op text, p_task_id uuid, p_user_id text, p_email text, p_key text, p_hash bytea,
    p_request_id uuid, p_key_retention float8, p_if_match timestamptz[], p_title varchar,
    p_description text, p_is_completed boolean, p_history_retention float8)
RETURNS TABLE (outcome text, id uuid, user_id text, title varchar, description text,
               is_completed boolean, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    prior record;
    answered boolean;
    locked_at timestamptz;
    refusal text;
    new_seq bigint;
    written record;
    purged bigint;
    oldest timestamptz;
    deletions_through bigint;
    purged_through bigint;
BEGIN
    SELECT k.request_id, k.request_hash, k.task_id, k.title, k.description, k.is_completed,
           k.created_at, k.updated_at
    INTO prior FROM idempotency_keys k WHERE k.user_id = p_user_id AND k.key = p_key;
    answered := FOUND;

    IF NOT answered AND op <> 'create' THEN
        SELECT t.updated_at INTO locked_at FROM tasks t
        WHERE t.id = p_task_id AND t.user_id = p_user_id FOR UPDATE;
        IF NOT FOUND THEN
            refusal := 'not_found';
        ELSIF p_if_match IS NOT NULL AND NOT (locked_at = ANY (p_if_match)) THEN
            refusal := 'precondition_failed';
        END IF;
        IF refusal IS NOT NULL THEN
            SELECT k.request_id, k.request_hash, k.task_id, k.title, k.description,
                   k.is_completed, k.created_at, k.updated_at
            INTO prior FROM idempotency_keys k WHERE k.user_id = p_user_id AND k.key = p_key;
            answered := FOUND;
            IF NOT answered THEN
                IF refusal = 'precondition_failed' THEN
                    RETURN QUERY SELECT refusal, p_task_id, p_user_id, NULL::varchar, NULL::text,
                        NULL::boolean, NULL::timestamptz, locked_at;
                END IF;
                RETURN;
            END IF;
        END IF;
    END IF;

    IF answered THEN
        RETURN QUERY SELECT
            CASE WHEN prior.request_id = p_request_id THEN 'written'
                 WHEN prior.request_hash = p_hash THEN 'replayed'
                 ELSE 'key_reused' END,
            prior.task_id, p_user_id, prior.title, prior.description, prior.is_completed,
            prior.created_at, prior.updated_at;
        RETURN;
    END IF;

    IF op = 'create' THEN
        INSERT INTO users AS u (id, email, change_seq) VALUES (p_user_id, p_email, 1)
        ON CONFLICT (id) DO UPDATE
            SET change_seq = u.change_seq + 1, email = COALESCE(EXCLUDED.email, u.email)
        RETURNING u.change_seq, u.latest_deletion, u.history_purged_through
        INTO new_seq, deletions_through, purged_through;
    ELSE
        UPDATE users u SET change_seq = u.change_seq + 1, email = COALESCE(p_email, u.email),
            latest_deletion = CASE WHEN op = 'delete' THEN u.change_seq + 1
                                   ELSE u.latest_deletion END
        WHERE u.id = p_user_id
        RETURNING u.change_seq, u.latest_deletion, u.history_purged_through
        INTO new_seq, deletions_through, purged_through;
    END IF;

    CASE op
    WHEN 'create' THEN
        INSERT INTO tasks AS t (id, user_id, title, description, change_seq)
        VALUES (p_task_id, p_user_id, p_title, p_description, new_seq)
        RETURNING t.id, t.title, t.description, t.is_completed, t.created_at, t.updated_at
        INTO written;
    WHEN 'update' THEN
        UPDATE tasks t SET title = p_title, description = p_description,
            is_completed = COALESCE(p_is_completed, t.is_completed),
            updated_at = GREATEST(now(), t.updated_at + interval '1 microsecond'),
            change_seq = new_seq
        WHERE t.id = p_task_id
        RETURNING t.id, t.title, t.description, t.is_completed, t.created_at, t.updated_at
        INTO written;
    WHEN 'toggle' THEN
        UPDATE tasks t SET is_completed = NOT t.is_completed,
            updated_at = GREATEST(now(), t.updated_at + interval '1 microsecond'),
            change_seq = new_seq
        WHERE t.id = p_task_id
        RETURNING t.id, t.title, t.description, t.is_completed, t.created_at, t.updated_at
        INTO written;
    WHEN 'delete' THEN
        DELETE FROM tasks t WHERE t.id = p_task_id;
        INSERT INTO task_deletions (user_id, change_seq, task_id)
        VALUES (p_user_id, new_seq, p_task_id);
        SELECT p_task_id AS id, NULL::varchar AS title, NULL::text AS description,
               NULL::boolean AS is_completed, NULL::timestamptz AS created_at,
               NULL::timestamptz AS updated_at
        INTO written;
    END CASE;

    INSERT INTO idempotency_keys (user_id, key, request_hash, request_id, expires_at,
        task_id, title, description, is_completed, created_at, updated_at)
    VALUES (p_user_id, p_key, p_hash, p_request_id, now() + p_key_retention * interval '1 second',
        written.id, written.title, written.description, written.is_completed,
        written.created_at, written.updated_at);

    DELETE FROM idempotency_keys expired
    USING (SELECT k.user_id, k.key FROM idempotency_keys k WHERE k.expires_at < now()
           ORDER BY k.expires_at LIMIT 4 FOR UPDATE SKIP LOCKED) batch
    WHERE expired.user_id = batch.user_id AND expired.key = batch.key;

    -- A user none of whose deletions is kept (most users, most of the time) has none to purge.
    IF deletions_through > purged_through THEN
        SELECT d.deleted_at INTO oldest FROM task_deletions d
        WHERE d.user_id = p_user_id ORDER BY d.change_seq LIMIT 1;
    END IF;
    IF oldest < now() - p_history_retention * interval '1 second' THEN
        WITH gone AS (
            DELETE FROM task_deletions d
            WHERE d.user_id = p_user_id
              AND d.change_seq IN (SELECT o.change_seq FROM task_deletions o
                                   WHERE o.user_id = p_user_id ORDER BY o.change_seq LIMIT 4)
              AND d.deleted_at < now() - p_history_retention * interval '1 second'
            RETURNING d.change_seq
        )
        SELECT max(gone.change_seq) INTO purged FROM gone;
        UPDATE users u SET history_purged_through = GREATEST(u.history_purged_through, purged)
        WHERE u.id = p_user_id;
    END IF;

    -- The answer row, from the output variables (no statement to run).
    outcome := 'written';
    id := written.id;
    user_id := p_user_id;
    title := written.title;
    description := written.description;
    is_completed := written.is_completed;
    created_at := written.created_at;
    updated_at := written.updated_at;
    RETURN NEXT;
END
$fn$;

-- The V5 functions, still called by the previous release during a deploy: the same signatures
-- over the one mechanism, with the default history retention (CHANGES_RETENTION_SECONDS'
-- default, 30 days).
CREATE OR REPLACE FUNCTION tasks_create_v1(uuid, text, text, text, bytea, uuid, float8, varchar, text)
RETURNS TABLE (outcome text, id uuid, user_id text, title varchar, description text,
               is_completed boolean, created_at timestamptz, updated_at timestamptz)
LANGUAGE sql AS $fn$
SELECT * FROM tasks_write_v2('create', $1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, NULL, 2592000)
$fn$;

CREATE OR REPLACE FUNCTION tasks_update_v1(uuid, text, text, text, bytea, uuid, float8, timestamptz[], varchar, text, boolean)
RETURNS TABLE (outcome text, id uuid, user_id text, title varchar, description text,
               is_completed boolean, created_at timestamptz, updated_at timestamptz)
LANGUAGE sql AS $fn$
SELECT * FROM tasks_write_v2('update', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 2592000)
$fn$;

CREATE OR REPLACE FUNCTION tasks_toggle_v1(uuid, text, text, text, bytea, uuid, float8, timestamptz[])
RETURNS TABLE (outcome text, id uuid, user_id text, title varchar, description text,
               is_completed boolean, created_at timestamptz, updated_at timestamptz)
LANGUAGE sql AS $fn$
SELECT * FROM tasks_write_v2('toggle', $1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, 2592000)
$fn$;

CREATE OR REPLACE FUNCTION tasks_delete_v1(uuid, text, text, text, bytea, uuid, float8, timestamptz[])
RETURNS TABLE (outcome text, id uuid, user_id text, title varchar, description text,
               is_completed boolean, created_at timestamptz, updated_at timestamptz)
LANGUAGE sql AS $fn$
SELECT * FROM tasks_write_v2('delete', $1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL, 2592000)
$fn$;

-- One page of changes: one statement, so one snapshot (the counter, the purge mark and the
-- changes agree). Parameters: $1 user id, $2 the token's position (0 from scratch), $3 where a
-- from-scratch sync started (NULL on its first page: the counter read here), $4 rows to fetch
-- (limit + 1).
--
-- Rows: the header (kind 'position', change_seq = the user's counter, `started` the sync's
-- start, `purged` the purge mark; absent for a user who never wrote, i.e. all zero), up to $4 of
-- the user's tasks changed after $2 ('upsert'), and up to $4 deletions after both $2 and the
-- start ('delete'), each side in position order. The caller merges the two sides by position
-- and keeps the first $4: one plain statement of three index range scans that stop early, which
-- costs PostgreSQL what a list page of the same size costs (BENCHMARKS.md "Incremental sync").
-- A deletion at or before the position where a from-scratch sync started removed a task no page
-- of that sync could list, so that sync never lists it.
CREATE OR REPLACE FUNCTION tasks_changes_v1(text, int8, int8, int8)
RETURNS TABLE (kind text, change_seq int8, started int8, purged int8, id uuid, user_id text,
               title varchar, description text, is_completed boolean,
               created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT 'position'::text, u.change_seq, COALESCE($3, u.change_seq), u.history_purged_through,
           NULL::uuid, u.id, NULL::varchar, NULL::text, NULL::boolean, NULL::timestamptz,
           NULL::timestamptz
    FROM users u WHERE u.id = $1
    UNION ALL
    (SELECT 'upsert'::text, t.change_seq, NULL::int8, NULL::int8, t.id, t.user_id, t.title,
            t.description, t.is_completed, t.created_at, t.updated_at
     FROM tasks t WHERE t.user_id = $1 AND t.change_seq > $2
     ORDER BY t.change_seq LIMIT $4)
    UNION ALL
    (SELECT 'delete'::text, d.change_seq, NULL::int8, NULL::int8, d.task_id, d.user_id,
            NULL::varchar, NULL::text, NULL::boolean, NULL::timestamptz, NULL::timestamptz
     FROM task_deletions d
     WHERE d.user_id = $1
       AND d.change_seq > GREATEST($2, COALESCE($3, (SELECT s.change_seq FROM users s WHERE s.id = $1)))
     ORDER BY d.change_seq LIMIT $4);
END
$fn$;
