//! The client side: the async client library over QUIC ([`conn`]), speaking
//! [`crate::protocol`], its client sessions ([`session`]), and scans that page through a strong keyspace ([`scan`]).

pub mod clock;
pub mod conn;
pub mod scan;
pub mod session;

pub use conn::{Client, ClientOptions, ConnError, Resend};
pub use scan::{ScanPage, ScanRequest, Scanner};
