-- Server-side guards for sessions of this database (new sessions pick them up). The API's own
-- per-request deadline (DATABASE_TIMEOUT_MS, cancel on expiry) is the primary limit; these catch
-- what a frozen or killed Lambda instance can no longer cancel. Migrations that need longer can
-- `SET statement_timeout` themselves.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', current_database(), '15s');
    EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = %L', current_database(), '60s');
END
$$;
