-- One row per record that is not yet acknowledged by the broker.
-- class 0 = transaction (never evicted, drained first), 1 = telemetry.
-- body is the record's JSON without its seq (see ferry_shared::record::Unsequenced).
CREATE TABLE records (
    seq         INTEGER PRIMARY KEY,
    class       INTEGER NOT NULL CHECK (class IN (0, 1)),
    appended_at INTEGER NOT NULL,          -- unix ms, for oldest_pending_age_s
    body        BLOB    NOT NULL
);
CREATE INDEX records_by_class ON records (class, seq);

-- Exactly one row: the spool's identity and counters that outlive its records.
CREATE TABLE spool (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    spool_id      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seq      INTEGER NOT NULL,        -- highest seq ever appended; seqs never repeat
    evicted_total INTEGER NOT NULL
);
