-- Counters as BIGINT, as on SQLite (whose INTEGER is 64-bit): both backends
-- then read them into the same row types.
ALTER TABLE rate_limits ALTER COLUMN hits TYPE BIGINT;
ALTER TABLE login_failures ALTER COLUMN failures TYPE BIGINT;
