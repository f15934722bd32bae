-- Environments page by keyset (`cursor=`), newest first. Gone ones (deleted, expired) stay in
-- the read model so that operations can still name them, and ephemeral ones come and go by the
-- hundred: an index on every environment made the list of live lasting ones walk past every
-- ephemeral or gone one ever made. The list without a status seeks the live ones of its kind
-- (lasting or ephemeral), a list of one status that status of its kind; both replace the index
-- on every environment, whose prefix (org_id) the second one keeps for the other queries of an
-- organization's.
DROP INDEX venv_environments_org_created;
CREATE INDEX venv_environments_org_live
    ON venv_environments (org_id, ephemeral, created_at DESC, id DESC)
    WHERE status NOT IN ('deleted', 'expired');
CREATE INDEX venv_environments_org_status
    ON venv_environments (org_id, ephemeral, status, created_at DESC, id DESC);
