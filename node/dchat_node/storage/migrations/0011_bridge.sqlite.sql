-- 0011 bridge: transfers seen in the vaults' Deposit logs, validator signatures (release and
-- refund attestations, by digest), and each source chain's scan position. Amounts are uint256
-- values as decimal TEXT. Times are microseconds since the epoch.
CREATE TABLE bridge_transfers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transfer_id TEXT NOT NULL UNIQUE,
    src_chain_id BIGINT NOT NULL,
    src_vault TEXT NOT NULL,
    nonce BIGINT NOT NULL,
    depositor TEXT NOT NULL,
    recipient TEXT NOT NULL,
    amount TEXT NOT NULL,
    dst_chain_id BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    src_tx_hash TEXT NOT NULL,
    src_block_number BIGINT NOT NULL,
    src_block_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    release_tx_hash TEXT,
    refund_tx_hash TEXT,
    last_error TEXT,
    timeout_counted BIGINT NOT NULL DEFAULT 0,
    observed_at BIGINT NOT NULL,
    final_at BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE INDEX bridge_transfers_state ON bridge_transfers (state, id);
CREATE INDEX bridge_transfers_depositor ON bridge_transfers (depositor, id);
CREATE INDEX bridge_transfers_recipient ON bridge_transfers (recipient, id);

CREATE TABLE bridge_signatures (
    transfer_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    signer TEXT NOT NULL,
    signature TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (transfer_id, kind, digest, signer)
);

CREATE TABLE bridge_cursors (
    chain_id BIGINT PRIMARY KEY,
    next_block BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
