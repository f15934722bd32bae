-- The venvs context (GestVenv): operation logs and the read models of environments, their
-- packages and operations.

-- Operation logs: a backend's output, line by line (like build_logs).
CREATE TABLE operation_logs (
    operation_id uuid NOT NULL,
    seq          bigint NOT NULL,
    org_id       uuid NOT NULL,
    stream       text NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line         text NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (operation_id, seq)
);

-- venvs.environments: one row per environment (deleted and expired ones stay, with their
-- status, so that an operation's environment can still be named).
CREATE TABLE venv_environments (
    id              uuid PRIMARY KEY,
    org_id          uuid NOT NULL,
    name            text NOT NULL,
    name_key        text NOT NULL,
    python_version  text NOT NULL,
    python          text,
    backend         text NOT NULL,
    description     text NOT NULL,
    requested       jsonb NOT NULL,
    status          text NOT NULL,
    error           text,
    package_count   integer NOT NULL DEFAULT 0,
    ephemeral       boolean NOT NULL,
    ttl_secs        bigint,
    expires_at      timestamptz,
    isolation_level text,
    operation_id    uuid NOT NULL,
    activated_at    timestamptz,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    revision        bigint NOT NULL
);
CREATE INDEX venv_environments_org_created ON venv_environments (org_id, created_at DESC, id DESC);
-- Environments are addressed by name too (unique among the live ones: the write side reserves
-- it; gone ones free it).
CREATE INDEX venv_environments_name ON venv_environments (org_id, name_key)
    WHERE status NOT IN ('deleted', 'expired');
CREATE INDEX venv_environments_expiring ON venv_environments (expires_at)
    WHERE ephemeral AND status NOT IN ('deleted', 'expired');

-- The packages found in each environment.
CREATE TABLE venv_packages (
    environment_id uuid NOT NULL,
    name_key       text NOT NULL,
    org_id         uuid NOT NULL,
    name           text NOT NULL,
    version        text NOT NULL,
    installed_at   timestamptz NOT NULL,
    PRIMARY KEY (environment_id, name_key)
);

-- venvs.operations: one row per operation.
CREATE TABLE venv_operations (
    id             uuid PRIMARY KEY,
    org_id         uuid NOT NULL,
    environment_id uuid,
    kind           text NOT NULL,
    request        jsonb NOT NULL,
    status         text NOT NULL,
    progress       smallint NOT NULL,
    message        text NOT NULL,
    result         jsonb,
    error          text,
    failure        text,
    duration       double precision,
    runner         text,
    created_by     text NOT NULL,
    queued_at      timestamptz NOT NULL,
    started_at     timestamptz,
    finished_at    timestamptz,
    revision       bigint NOT NULL
);
CREATE INDEX venv_operations_org_queued ON venv_operations (org_id, queued_at DESC, id DESC);
CREATE INDEX venv_operations_unfinished ON venv_operations (queued_at)
    WHERE status IN ('queued', 'running');
CREATE INDEX venv_operations_environment ON venv_operations (environment_id, queued_at DESC);
