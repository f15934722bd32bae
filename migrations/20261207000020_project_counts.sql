-- How many projects each organization has, kept by `factory.projects` in the same transaction
-- as the rows themselves: a list without a search answers its exact total from one indexed row
-- instead of counting the organization's projects on every page (at 1,000 projects the count
-- was two thirds of the list's statement; at 10⁶ it would read them all). Seeded from the read
-- model as it stands, which is at the projection's checkpoint.
CREATE TABLE project_counts (
    org_id   uuid PRIMARY KEY,
    projects bigint NOT NULL
);
INSERT INTO project_counts (org_id, projects)
SELECT org_id, count(*) FROM projects GROUP BY org_id;
