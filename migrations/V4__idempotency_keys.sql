-- Every successful write is recorded here under its request key, by the write's own statement:
-- the client's `Idempotency-Key`, or a server-generated `req <uuid>` when it sent none (a space
-- cannot occur in a client key, so the two never collide). A resend of the statement after a
-- broken connection, or a client's retry, finds the record instead of writing again and answers
-- the recorded outcome; the primary key makes concurrent copies of one write wait for each
-- other, and all but one fail. See shared/src/idempotency.rs and shared/src/tasks/sql.rs.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id      TEXT         NOT NULL,
    key          TEXT         NOT NULL,
    -- SHA-256 of route, task id and body: the same key with another request is 422.
    request_hash BYTEA        NOT NULL,
    -- The HTTP request that wrote it: a resend within that request is not a replay.
    request_id   UUID         NOT NULL,
    -- Client keys: 24 h (CONTRACT: at least 24 h); server keys: minutes. Purged by the writes.
    expires_at   TIMESTAMPTZ  NOT NULL,
    -- The task as the write answered it; only task_id for a delete.
    task_id      UUID         NULL,
    title        VARCHAR(500) NULL,
    description  TEXT         NULL,
    is_completed BOOLEAN      NULL,
    created_at   TIMESTAMPTZ  NULL,
    updated_at   TIMESTAMPTZ  NULL,
    PRIMARY KEY (user_id, key)
);

-- The purge walks expired keys oldest first.
CREATE INDEX IF NOT EXISTS idempotency_keys_expires_idx ON idempotency_keys (expires_at);
