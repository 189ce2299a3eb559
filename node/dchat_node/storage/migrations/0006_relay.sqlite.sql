-- 0006 relay domain (dchat_node/relay/store.py): end-to-end encrypted envelopes held for
-- their recipients, and the single-use fetch challenges. Binary values as base64 TEXT (the
-- same on both engines); envelope id = hex SHA-256 of the signed bytes (dedupe across
-- nodes); seq is this node's order (the fetch cursor). Times in Unix seconds except
-- received_at (microseconds like every table).
CREATE TABLE relay_envelopes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    ttl_secs BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    signature TEXT NOT NULL,
    origin TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE INDEX relay_envelopes_recipient ON relay_envelopes (recipient, seq);
CREATE INDEX relay_envelopes_expiry ON relay_envelopes (expires_at);

CREATE TABLE relay_challenges (
    challenge TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX relay_challenges_expiry ON relay_challenges (expires_at);
