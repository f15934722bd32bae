-- identity, part 2: login by email, API keys.
-- Secrets stay on the credentials side: an API key's SHA-256 hash is here, never in event data.

-- A user logs in with their username or their email address (both case-insensitive).
ALTER TABLE credentials ADD COLUMN email text;
CREATE UNIQUE INDEX credentials_email_key ON credentials (lower(email)) WHERE email IS NOT NULL;

-- The hash of each API key's secret, and when it was last used (updated at most once a minute:
-- a usage timestamp is not a fact worth an event per request).
CREATE TABLE api_key_secrets (
    key_id       uuid PRIMARY KEY,
    secret_hash  bytea NOT NULL,
    last_used_at timestamptz
);

-- Read model of API keys (the identity projection), for listing.
CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL,
    name       text NOT NULL,
    scopes     text[] NOT NULL,
    expires_at timestamptz,
    created_by uuid NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX api_keys_org ON api_keys (org_id, created_at, id);

-- Invitations: a user created without a password sets one with a token shown once to whoever
-- invited them. Only the token's SHA-256 hash is kept, until it is used or expires.
CREATE TABLE invitations (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL UNIQUE,
    org_id     uuid NOT NULL,
    expires_at timestamptz NOT NULL
);
