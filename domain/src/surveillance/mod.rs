//! Surveillance (Sentinel): cameras ([`camera`]: names, source URLs whose credentials never
//! reach an event, statuses as the capture pipeline reports them, capture and motion settings,
//! the camera aggregate with its one owning server) and detections ([`detection`]: what a
//! detector saw, and who acknowledged it when).

pub mod camera;
pub mod detection;
