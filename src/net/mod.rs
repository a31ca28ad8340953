//! The network layer of a real node: QUIC (quinn) with mutual TLS.
//!
//! quinn-specific code stays in this module; the rest of the node talks to it through frames
//! from [`crate::wire`].

pub mod faults;
pub mod tls;
