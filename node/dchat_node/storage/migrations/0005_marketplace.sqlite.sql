-- 0005 marketplace: listings, escrowed purchases, their event log, the escrow ledger and
-- idempotency keys. Amounts are uint256 values kept as decimal TEXT zero-padded to 78
-- digits, so comparing the text compares the numbers on both engines.
CREATE TABLE market_listings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    creator TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    price TEXT NOT NULL,
    token TEXT,
    payout_address TEXT NOT NULL,
    inventory BIGINT CHECK (inventory IS NULL OR inventory >= 0),
    status TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX market_listings_creator ON market_listings (creator, id);
CREATE INDEX market_listings_status ON market_listings (status, id);

CREATE TABLE market_purchases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    purchase_key TEXT NOT NULL UNIQUE,
    listing_id INTEGER NOT NULL REFERENCES market_listings (id),
    buyer TEXT NOT NULL,
    creator TEXT NOT NULL,
    payout_address TEXT NOT NULL,
    amount TEXT NOT NULL,
    token TEXT,
    chain_id BIGINT NOT NULL,
    pay_to TEXT NOT NULL,
    state TEXT NOT NULL,
    version BIGINT NOT NULL,
    tx_hash TEXT,
    payer TEXT,
    block_number BIGINT,
    block_hash TEXT,
    last_error TEXT,
    check_failures BIGINT NOT NULL DEFAULT 0,
    next_check_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    delivered_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- one transaction can never pay for two purchases
CREATE UNIQUE INDEX market_purchases_payment ON market_purchases (chain_id, tx_hash);
CREATE INDEX market_purchases_due ON market_purchases (state, next_check_at);
CREATE INDEX market_purchases_buyer ON market_purchases (buyer, id);

CREATE TABLE market_purchase_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    purchase_id INTEGER NOT NULL REFERENCES market_purchases (id),
    seq BIGINT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    tx_hash TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (purchase_id, seq)
);

CREATE TABLE market_escrow_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    purchase_id INTEGER NOT NULL REFERENCES market_purchases (id),
    seq BIGINT NOT NULL,
    currency TEXT NOT NULL,
    entry TEXT NOT NULL,
    amount TEXT NOT NULL,
    chain_id BIGINT NOT NULL,
    tx_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (purchase_id, seq)
);

CREATE TABLE market_idempotency (
    principal TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT,
    body TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (principal, idem_key)
);
