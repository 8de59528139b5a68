-- Idempotency-Key on POST /tasks (IETF httpapi draft "The Idempotency-Key HTTP Header
-- Field"): each key, the fingerprint of the body it came with, and the task it created
-- as the 201 showed it, so that a retry with the same key gets the same answer and
-- stores nothing new. A key row is written by the same statement as its task
-- (src/store/sql.rs); keys older than IDEMPOTENCY_KEY_TTL count as absent and are
-- pruned in the background.
CREATE TABLE idempotency_keys (
    key         text        PRIMARY KEY,
    fingerprint bytea       NOT NULL,
    task_id     bigint      NOT NULL,
    title       text        NOT NULL,
    description text,
    status      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The pruner walks expired keys oldest first.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
