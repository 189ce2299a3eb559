-- 0002 shared by both engines: look up a user's messages.
CREATE INDEX messages_author_id ON messages (author, id);
