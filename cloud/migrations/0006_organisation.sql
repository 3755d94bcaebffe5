-- The organisation above the ledger's stores, and the cards a person has blocked.
-- Idempotent: run at every open, after 0002 (SQLite) or 0003 (PostgreSQL); the SQL is the
-- same for both.
--
-- One ledger is one business: brands sit below it, stores below a brand. A store names its
-- IANA time zone and its ISO 4217 currency; a transaction for a store that is not here is
-- held, like one from an unregistered till.
CREATE TABLE IF NOT EXISTS brands (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS stores (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    brand      TEXT NOT NULL REFERENCES brands (id),
    time_zone  TEXT NOT NULL,
    currency   TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stores_by_brand ON stores (brand);

-- A blocked card: its transactions are rejected `card_blocked`. `successor` is the card
-- that took its balances (replace, merge). Unblocking deletes the row; the audit trail
-- keeps the story.
CREATE TABLE IF NOT EXISTS card_blocks (
    card       TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    successor  TEXT,
    blocked_at TEXT NOT NULL
);

-- Steps that must run once, not at every open.
CREATE TABLE IF NOT EXISTS schema_steps (
    step   TEXT PRIMARY KEY,
    run_at TEXT NOT NULL
);

-- A ledger from before stores were records: every store a till is registered at or a
-- transaction named becomes a store of brand `default`, in UTC and with currency XXX (ISO
-- 4217's "no currency") until a person says otherwise, so nothing that applied before
-- the upgrade is held after it. Once only: a store deleted later stays deleted.
INSERT INTO brands (id, name, created_at)
SELECT 'default', 'Default', '1970-01-01T00:00:00.000Z'
WHERE NOT EXISTS (SELECT 1 FROM schema_steps WHERE step = '0006_stores')
  AND (EXISTS (SELECT 1 FROM devices WHERE store IS NOT NULL)
       OR EXISTS (SELECT 1 FROM ledger WHERE store <> ''))
ON CONFLICT (id) DO NOTHING;

INSERT INTO stores (id, name, brand, time_zone, currency, created_at)
SELECT s, s, 'default', 'UTC', 'XXX', '1970-01-01T00:00:00.000Z'
FROM (SELECT store AS s FROM devices WHERE store IS NOT NULL
      UNION SELECT store FROM ledger WHERE store <> '') AS seen
WHERE NOT EXISTS (SELECT 1 FROM schema_steps WHERE step = '0006_stores')
ON CONFLICT (id) DO NOTHING;

INSERT INTO schema_steps (step, run_at) VALUES ('0006_stores', '1970-01-01T00:00:00.000Z')
ON CONFLICT (step) DO NOTHING;
