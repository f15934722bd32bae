-- A project's builds page by keyset (`cursor=`) like projects, and their total no longer grows
-- with them. Builds pile up for as long as a project lives (one per push), so counting a
-- project's builds on every page would read them all (or, bounded, 10,000 of them: some 2 ms
-- against 0.05 ms for the page itself): `factory.builds` keeps the count per project in the same
-- transaction as the rows, as `factory.projects` keeps `project_counts`. A build is never
-- removed, so the count only grows. Seeded from the read model as it stands, which is at the
-- projection's checkpoint.
-- Keyed by the organization too, as the list reads it: a count is never one of another tenant's.
CREATE TABLE build_counts (
    org_id     uuid NOT NULL,
    project_id uuid NOT NULL,
    builds     bigint NOT NULL,
    PRIMARY KEY (org_id, project_id)
);
INSERT INTO build_counts (org_id, project_id, builds)
SELECT org_id, project_id, count(*) FROM builds GROUP BY org_id, project_id;

-- A list of one status (`?status=failed`) seeks its rows in the order of the page instead of
-- filtering the project's whole history; `builds_project_queued` serves the list without one.
-- A build's status changes were not HOT updates already (`builds_org_status`).
CREATE INDEX builds_project_status_queued
    ON builds (org_id, project_id, status, queued_at DESC, id DESC);
