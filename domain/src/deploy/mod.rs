//! Deployments: the PaaS platform's apps and WindFlow's deployments ([`deployment`]), what they
//! run ([`spec`], [`framework`]) and where ([`target`]).

pub mod deployment;
pub mod framework;
pub mod spec;
pub mod target;
