-- identity: organizations, their members, users. No secret here: password, token and key hashes
-- stay in `credentials`.
CREATE TABLE organizations (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    name_key     text NOT NULL,
    description  text,
    settings     jsonb NOT NULL DEFAULT '{}',
    quotas       jsonb NOT NULL DEFAULT '{}',
    is_active    boolean NOT NULL,
    member_count integer NOT NULL DEFAULT 0,
    revision     bigint NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX organizations_name_key ON organizations (name_key, id);
CREATE INDEX organizations_created ON organizations (created_at, id);

CREATE TABLE memberships (
    org_id  uuid NOT NULL,
    user_id uuid NOT NULL,
    role    text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    since   timestamptz NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, org_id);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL,
    email         text NOT NULL,
    full_name     text,
    is_superadmin boolean NOT NULL,
    is_active     boolean NOT NULL,
    revision      bigint NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_username_key ON users (lower(username));
