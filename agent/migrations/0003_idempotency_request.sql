-- The request a key was first accepted with (its fields as canonical JSON, the key left
-- out), so that a key reused for a different transaction is refused instead of answered
-- with the first one. NULL for keys stored before this column: those replay as before.
ALTER TABLE idempotency ADD COLUMN request TEXT;
