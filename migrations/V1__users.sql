-- Users are filled just in time from the JWT (`sub`, `email`) by their first write.
CREATE TABLE IF NOT EXISTS users (
    id         TEXT PRIMARY KEY,
    email      TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
