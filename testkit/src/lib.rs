//! Harness shared by coffer's tests and benchmark: real servers where they can be had (Garage,
//! PostgreSQL), faithful stand-ins where they cannot (Qdrant).

pub mod compose;
pub mod garage;
pub mod http;
pub mod postgres;
pub mod proxy;
pub mod qdrant;

pub use garage::Garage;

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
pub use postgres::Postgres;
pub use proxy::{Fault, FaultProxy, Kind, Plan};
pub use qdrant::Qdrant;
