//! The pure heart of Atelier: aggregates, their commands, events, value types and errors.
//!
//! Everything here is deterministic and free of IO: no async, no database, no clock reads.
//! An aggregate is a pair of functions, `decide(&State, Command) -> Result<Vec<Event>, Error>`
//! and `evolve(State, &Event) -> State`; value types parse their input once so that invalid data
//! cannot be held. One module per context (`factory`, `deploy`, `venvs`, `surveillance`,
//! `identity`), mirroring the modules of the other layers. The contexts arrive with their issues.
