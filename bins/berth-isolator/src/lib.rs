//! The library half of `berth-isolator`: opening an agent's work directory under a lock
//! ([`Agent`]), the `berth.v1.Isolator` gRPC service ([`serve`]) and the demo ([`demo`]).
//! The binary (`src/main.rs`) is a thin clap front end over these.

pub mod agent;
pub mod demo;
pub mod dvdcli;
pub mod serve;

pub use agent::{Agent, Settings};
