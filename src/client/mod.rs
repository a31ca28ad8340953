//! The client side: the protocol clients and nodes speak. The async client library over QUIC
//! is built on it (issue 4).

pub mod protocol;
