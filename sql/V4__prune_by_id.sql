-- The pruner finds the keys that tasks hold past their TTL by walking the tasks in id
-- order, which is the order of their times, from where its last round stopped
-- (src/store/keys.rs), so every keyed create no longer keeps an index on created_at
-- for it: one index entry, and its share of the WAL, fewer per keyed create.
DROP INDEX tasks_idempotency_created_at_idx;
