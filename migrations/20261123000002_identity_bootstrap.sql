-- The small, replaceable login of issue 3: bootstrap credentials and a few settings.
-- Secret material (password hashes, the generated JWT secret) lives here, never in event data.

-- Process-wide settings: `default_org_id`, `jwt_secret` (development only, when none is configured).
CREATE TABLE settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Who may log in. Usernames compare case-insensitively.
CREATE TABLE credentials (
    user_id       uuid PRIMARY KEY,
    username      text NOT NULL,
    password_hash text NOT NULL,
    org_id        uuid NOT NULL,
    is_superadmin boolean NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX credentials_username_key ON credentials (lower(username));
