-- Idempotency-Key: the first answer to a POST, replayed to retries until it expires.
CREATE TABLE idempotency_keys (
    org_id        uuid NOT NULL,
    key           text NOT NULL,
    fingerprint   text NOT NULL,
    status        integer,
    headers       jsonb,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (org_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
