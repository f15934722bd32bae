-- A WindFlow deployment can run a stack version instead of a repository: it then has no
-- repository, and names the stack and its version.
ALTER TABLE deployments ALTER COLUMN github_url DROP NOT NULL;
ALTER TABLE deployments ADD COLUMN stack_id uuid;
ALTER TABLE deployments ADD COLUMN stack_version integer;
