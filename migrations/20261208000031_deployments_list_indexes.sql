-- Deployments page by keyset (`cursor=`), newest first. Deleted deployments stay in the read
-- model (their history is kept) but leave the list unless `status=deleted` is asked: an index
-- over every deployment made the list without a status walk past the deleted ones, a cost that
-- grew with every deployment ever deleted. The one the list seeks holds only the others.
DROP INDEX deployments_org_created;
CREATE INDEX deployments_org_live ON deployments (org_id, created_at DESC, id DESC)
    WHERE status <> 'deleted';
-- A list of one status seeks its rows in the page's order; the index it replaces, on
-- (org_id, status), is this one's prefix.
DROP INDEX deployments_org_status;
CREATE INDEX deployments_org_status_created
    ON deployments (org_id, status, created_at DESC, id DESC);
