//! Surveillance (Sentinel): cameras ([`camera`]: names, source URLs whose credentials are
//! masked, statuses as the capture pipeline reports them, capture and motion settings). The
//! aggregates, detections and the pipeline follow (issue 16).

pub mod camera;
