-- The two reads as PL/pgSQL functions, for the same reason as the writes (V5): an unnamed
-- statement is parsed and planned on every execution, which cost a list page more than running
-- it (planning 0.09 ms, execution 0.04 ms); a function's statements keep their plans per server
-- connection, through any pooler. Measured: server CPU per list -15%, per get -20%
-- (BENCHMARKS.md "Exactly-once writes: load").
--
-- The list has two statements, so that each cached (generic) plan can use the index for what it
-- is given: the first page scans the user's tasks from the newest; a later page starts at the
-- cursor (an index condition, not a filter), however deep it is.
--
-- Parameters are those of the statements they replace: list ($1 user id, $2 status filter or
-- NULL, $3 cursor created_at or NULL, $4 cursor id, $5 rows to fetch); get ($1 task id, $2 user
-- id). A changed function is a new version (`_v2`) in a new migration, as for the writes.

CREATE OR REPLACE FUNCTION tasks_list_v1(text, boolean, timestamptz, uuid, int8)
RETURNS TABLE (id uuid, user_id text, title varchar, description text,
               is_completed boolean, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
#variable_conflict use_column
BEGIN
IF $3 IS NULL THEN
    RETURN QUERY
    SELECT id, user_id, title, description, is_completed, created_at, updated_at
    FROM tasks
    WHERE user_id = $1 AND ($2 IS NULL OR is_completed = $2)
    ORDER BY created_at DESC, id DESC
    LIMIT $5;
ELSE
    RETURN QUERY
    SELECT id, user_id, title, description, is_completed, created_at, updated_at
    FROM tasks
    WHERE user_id = $1 AND (created_at, id) < ($3, $4) AND ($2 IS NULL OR is_completed = $2)
    ORDER BY created_at DESC, id DESC
    LIMIT $5;
END IF;
END
$fn$;

CREATE OR REPLACE FUNCTION tasks_get_v1(uuid, text)
RETURNS TABLE (id uuid, user_id text, title varchar, description text,
               is_completed boolean, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE AS $fn$
#variable_conflict use_column
BEGIN
RETURN QUERY
SELECT id, user_id, title, description, is_completed, created_at, updated_at
FROM tasks WHERE id = $1 AND user_id = $2;
END
$fn$;
