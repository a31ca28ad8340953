//! The client side: the async client library over QUIC ([`conn`]), speaking
//! [`crate::protocol`].

pub mod conn;

pub use conn::{Client, ClientOptions, ConnError};
