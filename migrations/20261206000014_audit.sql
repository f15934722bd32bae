-- The audit read model (`audit.log`): one row per event of the log, with the metadata that
-- says who acted, through which credential, for which organization and as part of what, in
-- columns the audit API filters on. It is derived like any read model (rebuilt from the log,
-- checked by `atelier verify`), so it works the same over either store adapter.

CREATE TABLE audit_log (
    commit          bigint NOT NULL,
    prepare         bigint NOT NULL,
    stream          text NOT NULL,
    category        text NOT NULL,
    revision        bigint NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    -- When the store recorded it.
    recorded_at     timestamptz NOT NULL,
    -- When the command that caused it was issued (metadata `occurred_at`), if recorded.
    occurred_at     timestamptz,
    org_id          uuid,
    actor           text,
    credential      text,
    request_id      text,
    correlation_id  text,
    causation_id    text,
    schema          integer NOT NULL,
    data            jsonb NOT NULL,
    PRIMARY KEY (commit, prepare)
);

CREATE INDEX audit_log_org ON audit_log (org_id, commit, prepare);
CREATE INDEX audit_log_actor ON audit_log (actor, commit, prepare);
CREATE INDEX audit_log_credential ON audit_log (credential, commit, prepare);
CREATE INDEX audit_log_correlation ON audit_log (correlation_id);
CREATE INDEX audit_log_stream ON audit_log (stream, revision);
CREATE INDEX audit_log_recorded ON audit_log (recorded_at);
