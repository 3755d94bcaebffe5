-- Keys under which a POS submitted a transaction. Written in the same transaction as the
-- spool append, so a key is accepted exactly when its record is durable; kept after the
-- record is acknowledged, so a late retry still gets the original answer.
CREATE TABLE idempotency (
    key         TEXT    PRIMARY KEY,
    tx_id       TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    created_at  INTEGER NOT NULL          -- unix ms
);
