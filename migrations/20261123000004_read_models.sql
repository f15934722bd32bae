-- Projection checkpoints: each projection writes its position in the same transaction as the
-- rows it derives, fenced by generation and position so that two runners never both apply a
-- batch and a rebuild invalidates any batch in flight.
CREATE TABLE projection_checkpoints (
    name           text PRIMARY KEY,
    version        integer NOT NULL,
    generation     bigint NOT NULL DEFAULT 0,
    commit         bigint NOT NULL DEFAULT 0,
    prepare        bigint NOT NULL DEFAULT 0,
    status         text NOT NULL DEFAULT 'running',
    error          text,
    failed_commit  bigint,
    failed_prepare bigint,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- factory.projects
CREATE TABLE projects (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL,
    name              text NOT NULL,
    name_key          text NOT NULL,
    repo_url          text NOT NULL,
    build_command     text,
    revision          bigint NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    created_by        text NOT NULL,
    last_build_status text
);
CREATE INDEX projects_org_name ON projects (org_id, name_key);
CREATE INDEX projects_org_created ON projects (org_id, created_at, id);
CREATE INDEX projects_org_updated ON projects (org_id, updated_at, id);
