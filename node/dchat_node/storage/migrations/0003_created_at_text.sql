-- 0003 shared by both engines: the RFC 3339 UTC text of created_at, written with the row by
-- the node (see storage/base.py, "Timestamps"). NULL for rows written before this version
-- (or by an older node during a rolling upgrade): reads then compute it from created_at.
ALTER TABLE channels ADD COLUMN created_at_text TEXT;
ALTER TABLE messages ADD COLUMN created_at_text TEXT;
