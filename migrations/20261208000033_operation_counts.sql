-- Operations page by keyset (`cursor=`), newest first. They pile up for as long as an
-- organization works (one per install, update, removal): counting them on every page would
-- read them all (or, bounded, 10,000 of them). The `venvs.operations` projection keeps the
-- count per organization in the same transaction as the rows; an operation is never removed,
-- so it only grows. Seeded from the read model as it stands, which is at the projection's
-- checkpoint.
CREATE TABLE operation_counts (
    org_id     uuid PRIMARY KEY,
    operations bigint NOT NULL
);
INSERT INTO operation_counts (org_id, operations)
SELECT org_id, count(*) FROM venv_operations GROUP BY org_id;
-- A list of one status (`?status=failed`) seeks its rows in the page's order. Progress
-- updates, the frequent ones, leave the status alone and stay HOT.
CREATE INDEX venv_operations_org_status
    ON venv_operations (org_id, status, queued_at DESC, id DESC);
