-- The project list by name pages in (name_key, id) order, by number or by keyset. The index it
-- had, (org_id, name_key), cannot give that order without a sort: for every page PostgreSQL
-- read the organization's projects and sorted them all (2 ms at 1,000 projects, growing with
-- them). An index in the page's order lets a page stop after its rows.
CREATE INDEX projects_org_name_id ON projects (org_id, name_key, id);
DROP INDEX projects_org_name;
