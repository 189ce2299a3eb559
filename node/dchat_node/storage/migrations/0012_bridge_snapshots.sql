-- 0012 bridge state snapshots (dchat_node/bridge/snapshots.py): one row per sequence number
-- this node verified (hash chained through prev_hash; cut = JSON list of
-- {"chain_id", "vault", "next_nonce"} by ascending chain id), and validator signatures by
-- snapshot hash (kept only after recovering to a registered validator). Hashes are 0x-hex
-- TEXT. Times are microseconds since the epoch.
CREATE TABLE bridge_snapshots (
    seq BIGINT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    root TEXT NOT NULL,
    leaf_count BIGINT NOT NULL,
    cut TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE bridge_snapshot_signatures (
    snapshot_hash TEXT NOT NULL,
    signer TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (snapshot_hash, signer)
);
