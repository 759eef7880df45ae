//! Harness shared by coffer's tests and benchmark: real servers, not mocks.

pub mod garage;
pub mod proxy;

pub use garage::Garage;
pub use proxy::{Fault, FaultProxy, Kind, Plan};
