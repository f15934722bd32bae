//! Stacks (WindFlow): named container configurations ([`stack`]), their validation against the
//! Compose Specification and a reviewer's checks ([`compose`]), the offline assistant engine
//! ([`assistant`]), and the record of the assistant's consultations ([`consultation`]).

pub mod assistant;
pub mod compose;
pub mod consultation;
pub mod stack;
