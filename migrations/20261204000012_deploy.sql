-- The deploy context: WindFlow's rate limit, deployment logs, the secret vault, the simulated
-- provisioner's address pool, and the read models of deployments and targets.

-- Sliding-window rate limits every server shares (commands::rate_limit): one row per hit.
CREATE TABLE rate_limit_hits (
    id  bigserial PRIMARY KEY,
    key text NOT NULL,
    at  timestamptz NOT NULL
);
CREATE INDEX rate_limit_hits_key_at ON rate_limit_hits (key, at);

-- Deployment logs: the provisioner's output, line by line (like build_logs).
CREATE TABLE deployment_logs (
    deployment_id uuid NOT NULL,
    seq           bigint NOT NULL,
    org_id        uuid NOT NULL,
    stream        text NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line          text NOT NULL,
    at            timestamptz NOT NULL,
    PRIMARY KEY (deployment_id, seq)
);

-- Secret values of environment variables. Events hold only `id` (the variable's `secret_ref`);
-- the runner reads the value when it starts the app. Removed when the deployment is destroyed.
CREATE TABLE deploy_secrets (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL,
    deployment_id uuid NOT NULL,
    name          text NOT NULL,
    value         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deploy_secrets_deployment ON deploy_secrets (deployment_id);

-- What a runner holds for a deployment: its VM id (from 100, unique on the platform) and, for
-- the simulated driver, an address of the pool (unique within the organization). Driver state,
-- not a read model: it is written before the event that announces it.
CREATE TABLE deploy_allocations (
    deployment_id uuid PRIMARY KEY,
    org_id        uuid NOT NULL,
    runner        text NOT NULL,
    ip            text,
    vm_id         integer NOT NULL UNIQUE,
    allocated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, ip)
);
CREATE INDEX deploy_allocations_runner ON deploy_allocations (runner);

-- deploy.deployments: one row per deployment (deleted ones stay, with status 'deleted').
CREATE TABLE deployments (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL,
    name            text NOT NULL,
    name_key        text NOT NULL,
    deployment_type text NOT NULL,
    framework       text NOT NULL,
    github_url      text NOT NULL,
    cores           integer NOT NULL,
    memory          integer NOT NULL,
    disk            integer NOT NULL,
    target_id       uuid,
    env             jsonb NOT NULL,
    status          text NOT NULL,
    version         integer NOT NULL,
    versions        integer NOT NULL,
    runner          text,
    driver          text,
    ip_address      text,
    vm_id           integer,
    access_url      text,
    failure         text,
    error_message   text,
    destroyed       boolean NOT NULL DEFAULT false,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deployed_at     timestamptz,
    revision        bigint NOT NULL
);
CREATE INDEX deployments_org_created ON deployments (org_id, created_at DESC, id DESC);
CREATE INDEX deployments_org_status ON deployments (org_id, status);
-- What a runner looks at after a start.
CREATE INDEX deployments_backlog ON deployments (runner, status)
    WHERE status <> 'failed' AND NOT (status = 'deleted' AND destroyed);

-- Every version of a deployment's spec (a rollback copies an earlier one).
CREATE TABLE deployment_versions (
    deployment_id uuid NOT NULL,
    version       integer NOT NULL,
    org_id        uuid NOT NULL,
    spec          jsonb NOT NULL,
    cause         text NOT NULL,
    rolled_back_from integer,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (deployment_id, version)
);

-- deploy.targets: WindFlow's deployment environments.
CREATE TABLE deploy_targets (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL,
    name        text NOT NULL,
    name_key    text NOT NULL,
    sort_key    text NOT NULL,
    kind        text NOT NULL,
    description text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    revision    bigint NOT NULL
);
CREATE INDEX deploy_targets_org_sort ON deploy_targets (org_id, sort_key, id);
