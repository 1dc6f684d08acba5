-- Counters are 64-bit already on SQLite (INTEGER); PostgreSQL's become
-- BIGINT in its 0004, so both backends read the same row types.
SELECT 1;
