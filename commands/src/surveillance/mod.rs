//! Sentinel, the cameras (issue 16): reading frames from a camera's source with ffmpeg, the
//! per-camera capture pipeline ([`capture`]), and what is detected on the frames ([`vision`]).
//! The aggregates live in `atelier_domain::surveillance`.

pub mod capture;
pub mod vision;
