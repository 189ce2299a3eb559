-- 0004 shared by both engines: per-user accessibility preferences (accessibility domain,
-- dchat_node/accessibility/store.py). One row per user id (the token's subject); no foreign
-- key to users: the domain does not depend on the chat tables. Booleans as 0/1 integers
-- (the same values on both engines), timestamps as BIGINT microseconds like every table.
CREATE TABLE accessibility_preferences (
    user_id TEXT PRIMARY KEY,
    font_scale DOUBLE PRECISION NOT NULL,
    high_contrast INTEGER NOT NULL,
    reduced_motion INTEGER NOT NULL,
    screen_reader_hints INTEGER NOT NULL,
    updated_at BIGINT NOT NULL
);
