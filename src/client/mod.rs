//! The client side: the async client library over QUIC ([`conn`]), speaking
//! [`crate::protocol`], and scans that page through a strong keyspace ([`scan`]).

pub mod conn;
pub mod scan;

pub use conn::{Client, ClientOptions, ConnError};
pub use scan::{ScanPage, ScanRequest, Scanner};
