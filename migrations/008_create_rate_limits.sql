-- 008_create_rate_limits: the rate limits of the sign-in flows counted in the database, so
-- that they hold for the whole fleet of gateway instances instead of per instance. One row
-- per (action, scope, subject): a GCRA cell whose state is one timestamp, `refilled_at`, the
-- moment the key's whole burst is available again (the "theoretical arrival time"). An
-- attempt is allowed when `refilled_at` is at most the period minus one interval ahead of the
-- database's clock, and moves it one interval further; a row whose `refilled_at` has passed
-- is at rest and is swept. The database's clock decides, so instances with skewed clocks
-- count alike.
--
-- `subject` is the client address (IPv6 by its /64) for scope 'ip' and the normalized email
-- as typed for scope 'email', whether or not an account has it, like auth_failures.

-- migrate:up

CREATE TABLE rate_limits (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    action TEXT NOT NULL,
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    refilled_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT rate_limits_pkey PRIMARY KEY (id),
    CONSTRAINT rate_limits_action_check CHECK (action IN ('login', 'otp_request', 'otp_verify', 'register', 'magic_request')),
    CONSTRAINT rate_limits_scope_check CHECK (scope IN ('ip', 'email')),
    CONSTRAINT rate_limits_subject_check CHECK (length(subject) BETWEEN 1 AND 254)
);
-- The upsert of each attempt.
CREATE UNIQUE INDEX idx_rate_limits_action_scope_subject ON rate_limits (action, scope, subject);
-- The sweep of keys at rest.
CREATE INDEX idx_rate_limits_refilled_at ON rate_limits (refilled_at);

-- migrate:down

DROP TABLE IF EXISTS rate_limits;
