-- 002_create_auth_failures: failed attempts per (email, purpose), kept in the database so the
-- failed-attempt budget holds across gateway instances and survives re-issued codes (a new
-- code does not reset it; NIST 800-63B). One row per failed attempt; the budget counts the
-- rows of the last `codes.failure_window`, and older rows are swept in batches.
--
-- `email` is the normalized address as typed, whether or not an account has it, so a budget
-- behaves the same for known and unknown addresses. `purpose` is a code purpose or
-- 'password' (password checks: login and password change).

-- migrate:up

CREATE TABLE auth_failures (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    email TEXT NOT NULL,
    purpose TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT auth_failures_pkey PRIMARY KEY (id),
    CONSTRAINT auth_failures_purpose_check CHECK (purpose IN ('login', 'verify_email', 'password_reset', 'magic_link', 'password')),
    CONSTRAINT auth_failures_email_check CHECK (length(email) BETWEEN 3 AND 254)
);
-- The budget query: failures of one (email, purpose) since the window start.
CREATE INDEX idx_auth_failures_email_purpose_created_at ON auth_failures (email, purpose, created_at);
-- The sweep of rows older than the window.
CREATE INDEX idx_auth_failures_created_at ON auth_failures (created_at);

-- migrate:down

DROP TABLE IF EXISTS auth_failures;
