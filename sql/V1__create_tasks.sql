-- The tasks table. Each CHECK mirrors a rule of spec §1 and is named
-- tasks_<field>_check, so a violation can be reported as a 422 naming the field
-- (http/error.rs). The Rust validation in tasks.rs runs first; these are the backstop.
CREATE TABLE tasks (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title       text        NOT NULL,
    description text,
    status      text        NOT NULL DEFAULT 'pending',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_title_check
        CHECK (char_length(title) BETWEEN 1 AND 200 AND title ~ '[^[:space:]]'),
    CONSTRAINT tasks_description_check
        CHECK (char_length(description) <= 5000),
    CONSTRAINT tasks_status_check
        CHECK (status IN ('pending', 'in_progress', 'completed')),
    CONSTRAINT tasks_updated_at_check
        CHECK (updated_at >= created_at)
);

-- GET /tasks?status=… walks this in id order.
CREATE INDEX tasks_status_id_idx ON tasks (status, id);
