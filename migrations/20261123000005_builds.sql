-- factory.builds: one row per build (the builds projection owns it).
CREATE TABLE builds (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL,
    project_id       uuid NOT NULL,
    project_revision bigint NOT NULL,
    repo_url         text NOT NULL,
    build_command    text,
    status           text NOT NULL,
    triggered_by     text NOT NULL,
    restart_of       uuid,
    runner           text,
    exit_code        integer,
    failure          text,
    message          text,
    queued_at        timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    duration_ms      bigint,
    revision         bigint NOT NULL
);
CREATE INDEX builds_project_queued ON builds (org_id, project_id, queued_at DESC, id DESC);
CREATE INDEX builds_org_status ON builds (org_id, status);
-- What the runner resumes or interrupts after a restart.
CREATE INDEX builds_unfinished ON builds (status, queued_at) WHERE status IN ('queued', 'running');

-- factory.projects shows each project's last build (the projects projection follows builds too).
ALTER TABLE projects ADD COLUMN last_build_id uuid, ADD COLUMN last_build_at timestamptz;

-- Build logs: written by the build runner, line by line, not as events (they are output, not
-- facts, and can be large). `seq` counts from 0 per build; readers page by it.
CREATE TABLE build_logs (
    build_id uuid NOT NULL,
    seq      bigint NOT NULL,
    org_id   uuid NOT NULL,
    stream   text NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line     text NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (build_id, seq)
);
