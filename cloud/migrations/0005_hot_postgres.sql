-- The dashboards' hot store on PostgreSQL: the same tables as 0004 (SQLite).

-- One counter, taken once per write transaction: rows carry the rev that last changed them,
-- and the dashboards' event feed asks for what changed after the rev it saw.
CREATE TABLE IF NOT EXISTS hot_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO hot_meta (key, value) VALUES ('rev', 0) ON CONFLICT DO NOTHING;

-- Raw readings, one row per metric; (device, spool, seq, metric) makes a resend a no-op.
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts_ms  BIGINT NOT NULL,
    spool  TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    value  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, metric, ts_ms, spool, seq)
);

-- Per device, metric and minute: count, sum, min and max of the raw readings.
CREATE TABLE IF NOT EXISTS rollups (
    device    TEXT NOT NULL,
    metric    TEXT NOT NULL,
    minute_ms BIGINT NOT NULL,
    n         BIGINT NOT NULL,
    total     DOUBLE PRECISION NOT NULL,
    lo        DOUBLE PRECISION NOT NULL,
    hi        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, metric, minute_ms)
);

CREATE TABLE IF NOT EXISTS latest (
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    ts_ms  BIGINT NOT NULL,
    value  DOUBLE PRECISION NOT NULL,
    rev    BIGINT NOT NULL,
    PRIMARY KEY (device, metric)
);
CREATE INDEX IF NOT EXISTS latest_by_rev ON latest (rev);

CREATE TABLE IF NOT EXISTS devices (
    device               TEXT PRIMARY KEY,
    last_seen_ms         BIGINT,
    online               BIGINT,
    status_ms            BIGINT,
    agent_version        TEXT,
    spool                TEXT,
    last_seq             BIGINT,
    pending              BIGINT,
    pending_bytes        BIGINT,
    pending_transactions BIGINT,
    oldest_pending_age_s DOUBLE PRECISION,
    evicted_total        BIGINT,
    rev                  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_by_rev ON devices (rev);

-- Where each alarm rule stands for each device.
CREATE TABLE IF NOT EXISTS alarm_state (
    rule       TEXT NOT NULL,
    device     TEXT NOT NULL,
    since_ms   BIGINT,
    active_id  BIGINT,
    last_ts_ms BIGINT NOT NULL,
    PRIMARY KEY (rule, device)
);

CREATE TABLE IF NOT EXISTS alarms (
    id            BIGSERIAL PRIMARY KEY,
    rule          TEXT NOT NULL,
    device        TEXT NOT NULL,
    metric        TEXT NOT NULL,
    condition     TEXT NOT NULL,
    raised_ms     BIGINT NOT NULL,
    raised_value  DOUBLE PRECISION NOT NULL,
    cleared_ms    BIGINT,
    cleared_value DOUBLE PRECISION,
    rev           BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_by_rev ON alarms (rev);
