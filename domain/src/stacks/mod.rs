//! Stacks (WindFlow): named container configurations ([`stack`]).

pub mod stack;
