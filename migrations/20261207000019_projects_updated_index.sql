-- Projects sorted by `updated_at` page by keyset (`cursor=`), which needs an index to seek;
-- _0007 dropped it so that updates could be HOT. Measured on one organization of 10⁶ projects
-- (EXPLAIN ANALYZE, PostgreSQL 15): without it every page sorted by `updated_at`, the first as
-- much as the last, is a parallel seq scan and a top-N sort, 360 to 430 ms; with it an index
-- scan of 21 entries, 0.14 ms. Its cost is on writes: an update that changes `updated_at`
-- cannot be HOT, so it adds an entry to each index, and autovacuum removes the dead ones
-- (5,000 single-row updates took 0.3 to 0.6 s with or without it, within the noise). A list
-- whose cost grows with the organization is the bigger cost: the index comes back.
CREATE INDEX projects_org_updated ON projects (org_id, updated_at, id);
