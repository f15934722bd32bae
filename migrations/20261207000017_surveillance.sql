-- Surveillance (Sentinel): what is kept beside the log, and the read models.

-- A camera source's credentials (`user:password` of its URL): named in events only by id.
CREATE TABLE surveillance_credentials (
    id         uuid PRIMARY KEY,
    org_id     uuid NOT NULL,
    camera_id  uuid NOT NULL,
    value      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX surveillance_credentials_camera ON surveillance_credentials (camera_id);

-- Detections' JPEG snapshots: written before the event that names them.
CREATE TABLE surveillance_snapshots (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL,
    detection_id uuid NOT NULL,
    jpeg         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX surveillance_snapshots_detection ON surveillance_snapshots (detection_id);

-- What the owning server's pipeline measures (frames, rates, latencies): telemetry, not
-- decisions, so it is not in the log; the pipeline writes it every few seconds.
CREATE TABLE surveillance_telemetry (
    camera_id  uuid PRIMARY KEY,
    org_id     uuid NOT NULL,
    runner     text NOT NULL,
    figures    jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The `surveillance.cameras` read model.
CREATE TABLE surveillance_cameras (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL,
    name              text NOT NULL,
    sort_key          text NOT NULL,
    url               text NOT NULL,
    has_credentials   boolean NOT NULL,
    location          text NOT NULL,
    status            text NOT NULL,
    running           boolean NOT NULL,
    last_error        text,
    width             integer,
    height            integer,
    fps               integer,
    capture           jsonb NOT NULL,
    motion            jsonb NOT NULL,
    runner            text,
    started_at        timestamptz,
    status_changed_at timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    revision          bigint NOT NULL
);
CREATE INDEX surveillance_cameras_org_sort ON surveillance_cameras (org_id, sort_key, id);
CREATE INDEX surveillance_cameras_running ON surveillance_cameras (running) WHERE running;

-- The `surveillance.detections` read model, with one row per standing acknowledgement.
CREATE TABLE surveillance_detections (
    id                  uuid PRIMARY KEY,
    org_id              uuid NOT NULL,
    camera_id           uuid NOT NULL,
    detection_type      text NOT NULL,
    severity            text NOT NULL,
    confidence          double precision NOT NULL,
    bbox                jsonb,
    snapshot_id         uuid,
    description         text NOT NULL,
    source              jsonb NOT NULL,
    occurred_at         timestamptz NOT NULL,
    notes               text NOT NULL,
    acknowledged        boolean NOT NULL,
    first_acknowledged_at timestamptz,
    revision            bigint NOT NULL
);
CREATE INDEX surveillance_detections_org_time ON surveillance_detections (org_id, occurred_at DESC, id DESC);
CREATE INDEX surveillance_detections_org_camera ON surveillance_detections (org_id, camera_id, occurred_at DESC);
CREATE INDEX surveillance_detections_unacknowledged ON surveillance_detections (org_id) WHERE NOT acknowledged;

CREATE TABLE surveillance_acknowledgements (
    detection_id uuid NOT NULL,
    org_id       uuid NOT NULL,
    user_id      uuid NOT NULL,
    at           timestamptz NOT NULL,
    PRIMARY KEY (detection_id, user_id)
);
