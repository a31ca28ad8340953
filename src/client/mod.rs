//! The client side: the protocol clients and nodes speak ([`protocol`], [`admin`]) and the
//! async client library over QUIC ([`conn`]).

pub mod admin;
pub mod conn;
pub mod protocol;

pub use conn::{Client, ClientOptions, ConnError};
