-- A user belongs to the organizations they are added to and no other: one created without an
-- organization has none, so their login's default organization (where their sessions act unless
-- they name one) may be NULL, and so may an invitation's.
ALTER TABLE credentials ALTER COLUMN org_id DROP NOT NULL;
ALTER TABLE invitations ALTER COLUMN org_id DROP NOT NULL;
