CREATE TABLE IF NOT EXISTS tasks (
    id           UUID PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        VARCHAR(500) NOT NULL,
    description  TEXT NULL CHECK (char_length(description) <= 5000),
    is_completed BOOLEAN NOT NULL DEFAULT false,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Serves ownership filtering and the list order (created_at DESC, id DESC) with keyset paging.
CREATE INDEX IF NOT EXISTS tasks_user_created_idx
    ON tasks (user_id, created_at DESC, id DESC);
