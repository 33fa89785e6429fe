-- 001_create_users: the auth tables of the platform (identity, passwords, sessions, one-time
-- codes, roles, OAuth links). SQL runs unchanged on PostgreSQL and CockroachDB.
--
-- Keys are UUIDs (users.id and its foreign keys as UUID text, as the platform's other services
-- reference users by that string). No triggers: every UPDATE sets updated_at itself. Tables
-- whose identity is their key (user_passwords, user_roles) keep the seed's keys. Soft delete is
-- users.deleted_at; a session ends by revoked_at and a code by used_at.

-- migrate:up

CREATE TABLE users (
    id TEXT NOT NULL DEFAULT gen_random_uuid()::TEXT,
    email TEXT NOT NULL,
    email_verified BOOLEAN NOT NULL DEFAULT false,
    status TEXT NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_status_check CHECK (status IN ('active', 'disabled')),
    CONSTRAINT users_email_check CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254)
);
CREATE UNIQUE INDEX idx_users_email ON users (email);
-- The revocation poll reads users changed (disabled, deleted, roles) since its watermark;
-- every change of status, deleted_at or roles sets updated_at in the same transaction.
CREATE INDEX idx_users_updated_at ON users (updated_at);

CREATE TABLE user_passwords (
    user_id TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT user_passwords_pkey PRIMARY KEY (user_id),
    CONSTRAINT user_passwords_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE TABLE sessions (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    user_id TEXT NOT NULL,
    -- SHA-256 of the raw token; the token itself is never stored.
    token_hash BYTEA NOT NULL,
    ip_address TEXT NULL,
    device_label TEXT NULL,
    user_agent TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Written at most once per touch interval, in batches, off the request path.
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ NULL,
    revoked_reason TEXT NULL,
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT sessions_token_hash_check CHECK (length(token_hash) = 32)
);
CREATE UNIQUE INDEX idx_sessions_token_hash ON sessions (token_hash);
CREATE INDEX idx_sessions_user_id ON sessions (user_id) WHERE revoked_at IS NULL;
-- The revocation poll reads sessions revoked since its watermark.
CREATE INDEX idx_sessions_revoked_at ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
-- Cleanup of expired sessions.
CREATE INDEX idx_sessions_expires_at ON sessions (expires_at);

CREATE TABLE auth_codes (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    email TEXT NOT NULL,
    user_id TEXT NULL,
    purpose TEXT NOT NULL,
    -- Keyed hash (HMAC-SHA-256 with the gateway secret) of the code or link token.
    code_hash BYTEA NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    return_to TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ NULL,
    CONSTRAINT auth_codes_pkey PRIMARY KEY (id),
    CONSTRAINT auth_codes_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT auth_codes_purpose_check CHECK (purpose IN ('login', 'verify_email', 'password_reset', 'magic_link')),
    CONSTRAINT auth_codes_attempts_check CHECK (attempts >= 0),
    CONSTRAINT auth_codes_code_hash_check CHECK (length(code_hash) = 32)
);
CREATE INDEX idx_auth_codes_email_purpose ON auth_codes (email, purpose) WHERE used_at IS NULL;
CREATE INDEX idx_auth_codes_user_id ON auth_codes (user_id);
-- Magic links are looked up by the keyed hash of their token.
CREATE INDEX idx_auth_codes_code_hash ON auth_codes (code_hash) WHERE used_at IS NULL;
-- Cleanup of expired codes.
CREATE INDEX idx_auth_codes_expires_at ON auth_codes (expires_at);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT user_roles_pkey PRIMARY KEY (user_id, role),
    CONSTRAINT user_roles_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT user_roles_role_check CHECK (length(role) BETWEEN 1 AND 64)
);
CREATE INDEX idx_user_roles_role ON user_roles (role);

CREATE TABLE oauth_connections (
    id UUID NOT NULL DEFAULT gen_random_uuid(),
    user_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    provider_user_id TEXT NOT NULL,
    email TEXT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ NULL,
    CONSTRAINT oauth_connections_pkey PRIMARY KEY (id),
    CONSTRAINT oauth_connections_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX idx_oauth_connections_provider_provider_user_id ON oauth_connections (provider, provider_user_id);
CREATE INDEX idx_oauth_connections_user_id ON oauth_connections (user_id);

-- migrate:down

DROP TABLE IF EXISTS oauth_connections;
DROP TABLE IF EXISTS user_roles;
DROP TABLE IF EXISTS auth_codes;
DROP TABLE IF EXISTS sessions;
DROP TABLE IF EXISTS user_passwords;
DROP TABLE IF EXISTS users;
