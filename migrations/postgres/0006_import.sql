-- Accounts taken over by `authql import` may be inactive in the system
-- they come from (Django's is_active, Keycloak's enabled, Supabase's
-- banned or deleted users): such an account keeps its data but cannot sign
-- in, receive reset links or sign-in codes, or use a session.
ALTER TABLE users ADD COLUMN disabled_at TIMESTAMPTZ;
