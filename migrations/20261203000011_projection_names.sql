-- Projection names read `<context>.<read model>`: identity's single projection (organizations,
-- memberships, users and API keys, which its queries join) is `identity.directory`. Its rows
-- and checkpoint carry over, so nothing is rebuilt.
UPDATE projection_checkpoints SET name = 'identity.directory' WHERE name = 'identity';
