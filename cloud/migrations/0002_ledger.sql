-- The loyalty ledger. Idempotent: run at every open.
CREATE TABLE IF NOT EXISTS programs (
    id   TEXT PRIMARY KEY,
    body TEXT NOT NULL          -- the program as JSON (README: loyalty core)
);

CREATE TABLE IF NOT EXISTS cards (
    card       TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS balances (
    card    TEXT NOT NULL,
    program TEXT NOT NULL,
    balance INTEGER NOT NULL,
    flagged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (card, program)
) WITHOUT ROWID;

-- Append-only, but for reversed_by, set once when a reversal applies.
CREATE TABLE IF NOT EXISTS ledger (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id       TEXT NOT NULL UNIQUE,
    content     TEXT NOT NULL,  -- the canonical txn JSON: a resend must match it exactly
    card        TEXT NOT NULL,
    program     TEXT NOT NULL,
    store       TEXT NOT NULL,
    op          TEXT NOT NULL,
    delta       INTEGER NOT NULL,
    offline     INTEGER NOT NULL,
    applied_at  TEXT NOT NULL,
    reversed_by TEXT
);
CREATE INDEX IF NOT EXISTS ledger_by_card ON ledger (card, seq);

-- The device registry: which devices may send transactions, and for which store. A
-- transaction routed from a device is applied only when the device is a registered,
-- active till at the transaction's store. Retiring keeps the row (retired_at).
CREATE TABLE IF NOT EXISTS devices (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    store         TEXT,
    registered_at TEXT NOT NULL,
    retired_at    TEXT
);

-- Transactions held for a device not registered yet, so that GET /v1/devices can say how
-- many wait; the router keeps the transactions themselves queued. A row goes when its
-- transaction is judged (applied, duplicate or rejected).
CREATE TABLE IF NOT EXISTS held (
    tx_id   TEXT PRIMARY KEY,
    device  TEXT NOT NULL,
    held_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS held_by_device ON held (device);

-- The audit trail: every write by a person or a token (programs, the registry, manual
-- transactions), with who, what and the request's id. Append-only.
CREATE TABLE IF NOT EXISTS audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    who        TEXT NOT NULL,
    role       TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     TEXT NOT NULL,   -- JSON
    request_id TEXT NOT NULL
);
