-- The spool's format, for rollbacks: `readable_by` is the oldest format a binary must know
-- to use this file. A migration that only adds (a table, a nullable column) leaves it; one
-- that changes what older binaries rely on raises it to its own number, and the update guard
-- then refuses to roll back to a binary that knows less (README: updates).
CREATE TABLE spool_format (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    readable_by INTEGER NOT NULL
);
INSERT INTO spool_format (id, readable_by) VALUES (1, 4);
