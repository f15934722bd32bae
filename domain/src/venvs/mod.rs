//! Python environments (GestVenv): environments ([`environment`]), the operations that change
//! them ([`operation`]), the package requirements they are given ([`requirement`]) and the
//! small values they are made of ([`values`]).

pub mod environment;
pub mod operation;
pub mod requirement;
pub mod values;
