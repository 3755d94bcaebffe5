-- The ingest journal. Idempotent: run at every open.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- NDJSON lines of one partition from one admission; batch is set when sealed.
CREATE TABLE IF NOT EXISTS chunks (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    partition         TEXT NOT NULL,
    lines             BLOB NOT NULL,
    records           INTEGER NOT NULL,
    first_received_ms INTEGER NOT NULL,
    batch             INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_by_batch ON chunks (batch);

-- Sealed lake objects. AUTOINCREMENT: an id, and so an object key, is never reused.
CREATE TABLE IF NOT EXISTS batches (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    partition  TEXT NOT NULL,
    object_key TEXT NOT NULL,
    records    INTEGER NOT NULL
);

-- Seqs admitted per (device, spool): one row per closed range, so an admission writes only
-- the ranges it moved.
CREATE TABLE IF NOT EXISTS seen_ranges (
    device TEXT NOT NULL,
    spool  TEXT NOT NULL,
    lo     INTEGER NOT NULL,
    hi     INTEGER NOT NULL,
    PRIMARY KEY (device, spool, lo)
) WITHOUT ROWID;

-- Older journals kept a whole set in one row ("1-500,502-900"); opening moves it into
-- seen_ranges.
CREATE TABLE IF NOT EXISTS seen (
    device TEXT NOT NULL,
    spool  TEXT NOT NULL,
    ranges TEXT NOT NULL,
    PRIMARY KEY (device, spool)
) WITHOUT ROWID;

-- Transaction records handed to the loyalty router.
CREATE TABLE IF NOT EXISTS routes (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    tx_id TEXT NOT NULL,
    body  TEXT NOT NULL
);

-- Entries for the dashboards' hot store (readings, status, device activity), as JSON.
CREATE TABLE IF NOT EXISTS hot (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    body TEXT NOT NULL
);
