//! The client side: the protocol clients and nodes speak ([`protocol`], [`admin`]) and the
//! async client library over QUIC.

pub mod admin;
pub mod protocol;
