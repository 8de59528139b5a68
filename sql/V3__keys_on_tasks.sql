-- Idempotency keys move onto the tasks they created: a keyed create is then one row
-- and one more index entry, not a second row in a second table (keyed creates in
-- `make bench` went from about 0.7 to about 0.8 of plain ones), and the unique index
-- below is what lets a key's first use be its only one (src/store/sql.rs).
--
-- A replay is rebuilt from the retry's own body: a body with the key's fingerprint is
-- the same body, so it holds the title, description and status the create answered;
-- the row adds the id and the time (src/store/keys.rs). Both columns are cleared when
-- the key expires (IDEMPOTENCY_KEY_TTL), by the pruner or by a create that uses the
-- key again.
ALTER TABLE tasks
    ADD COLUMN idempotency_key text,
    ADD COLUMN idempotency_fingerprint bytea;

CREATE UNIQUE INDEX tasks_idempotency_key_idx ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- The pruner walks expired keys oldest first. Its predicate names the fingerprint (set
-- and cleared with the key), so that no lookup by key can use this index: on stale
-- statistics the planner took it for one, and walked every key of the last day.
CREATE INDEX tasks_idempotency_created_at_idx ON tasks (created_at)
    WHERE idempotency_fingerprint IS NOT NULL;

-- idempotency_keys now holds the keys of deleted tasks, until they expire (a retry of
-- a deleted task's create is still answered as it was), and those a server of the
-- previous version stores during a rolling upgrade. Its rows no longer copy the task.
ALTER TABLE idempotency_keys
    ALTER COLUMN title DROP NOT NULL,
    ALTER COLUMN status DROP NOT NULL;
