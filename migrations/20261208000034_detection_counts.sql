-- Detections page by keyset (`cursor=`), newest first. A camera's pipeline records them all
-- day long, so counting an organization's detections on every page would read them all (or,
-- bounded, 10,000 of them): `surveillance.detections` keeps the count per organization in the
-- same transaction as the rows (one more on a recording, one less on a deletion). Seeded from
-- the read model as it stands, which is at the projection's checkpoint.
CREATE TABLE detection_counts (
    org_id     uuid PRIMARY KEY,
    detections bigint NOT NULL
);
INSERT INTO detection_counts (org_id, detections)
SELECT org_id, count(*) FROM surveillance_detections GROUP BY org_id;

-- The detections nobody acknowledged (`?acknowledged=false`, what a guard works through) seek
-- their page in its order: the index they had held no order, so each page read and sorted
-- every unacknowledged one. Its prefix still serves their count. Acknowledging one was not a
-- HOT update already (the index's condition names `acknowledged`).
DROP INDEX surveillance_detections_unacknowledged;
CREATE INDEX surveillance_detections_unacknowledged
    ON surveillance_detections (org_id, occurred_at DESC, id DESC) WHERE NOT acknowledged;
