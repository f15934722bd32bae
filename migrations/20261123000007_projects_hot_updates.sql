-- Project updates change `updated_at` on every write; with an index on it no update could be
-- HOT, and every update left a dead index entry in three indexes (the API bench left 8,000 dead
-- tuples for 1,000 projects). Sorting one organization's projects by `updated_at` sorts its rows
-- without an index instead. Room on each page lets updates stay on it.
DROP INDEX projects_org_updated;
ALTER TABLE projects SET (fillfactor = 80);
