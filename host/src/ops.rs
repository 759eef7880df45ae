//! Operations: what a front end asks coffer to do, in the operator's words ("back up app X",
//! "restore snapshot S", "forget by policy P", "what changed between A and B").
//!
//! The CLI runs them today and the daemon will tomorrow. Neither is known here: an operation
//! reports its log lines and long-running work through an [`Events`] sink and returns a plain
//! result the front end prints or serializes.

pub mod app;
pub mod diff;
pub mod drill;
mod events;
pub mod forget;
pub mod stats;
pub mod upgrade;

pub use events::{Events, NoEvents};
