//! The network layer of a real node: QUIC (quinn) with mutual TLS.
//!
//! quinn-specific code stays in this module; the rest of the node talks to it through frames
//! from [`crate::wire`].

pub mod faults;
pub mod peer;
pub mod queue;
pub mod tls;

/// The application protocol a connection negotiated, if any.
pub fn alpn_of(connection: &quinn::Connection) -> Option<Vec<u8>> {
    let data = connection.handshake_data()?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    data.protocol
}
