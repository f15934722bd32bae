-- Stacks (WindFlow): the `stacks.stacks` read model. The configuration of the current version
-- is kept whole (lists show it, as WindFlow's StackResponse does); older versions are in the
-- log (history, as_of, diff).
CREATE TABLE stacks (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL,
    name             text NOT NULL,
    sort_key         text NOT NULL,
    description      text NOT NULL,
    configuration    jsonb NOT NULL,
    version          integer NOT NULL,
    valid            boolean NOT NULL,
    llm_optimized    boolean NOT NULL,
    origin           jsonb NOT NULL,
    deployed_version integer,
    last_deployed_at timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    revision         bigint NOT NULL
);

CREATE INDEX stacks_org_sort ON stacks (org_id, sort_key, id);
