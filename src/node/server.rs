//! The QUIC side of the node: one endpoint for peers and clients, told apart by ALPN.
//!
//! Peer connections go to the transport. A client connection carries one request per
//! bidirectional stream: one [`ToNode`] frame in, one [`FromNode`] frame out. A stream whose
//! bytes are not one well-formed frame is answered with `ClientError::Malformed` and closed;
//! the connection and the node carry on.

use super::core::PeerMessage;
use super::driver::ClientInput;
use crate::net::peer::{Inbound, Transport};
use crate::net::tls;
use crate::protocol::ClientError;
use crate::protocol::admin::{AdminError, AdminRequest, FromNode, ToNode};
use crate::wire;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// QUIC application error code for a connection with an unknown ALPN.
const CLOSE_UNKNOWN_PROTOCOL: u32 = 0x20;

/// Accepts connections until the endpoint closes.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    transport: Arc<Transport<PeerMessage>>,
    clients: mpsc::Sender<ClientInput>,
    peers: mpsc::Sender<Inbound<PeerMessage>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let transport = transport.clone();
        let clients = clients.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            // The handshake verified the certificate chain against the cluster CA.
            let connection = match incoming.await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(%error, "handshake refused");
                    return;
                }
            };
            match crate::net::alpn_of(&connection).as_deref() {
                Some(tls::ALPN_PEER) => transport.serve_connection(connection, peers).await,
                Some(tls::ALPN_CLIENT) => serve_client(connection, clients).await,
                _ => connection.close(CLOSE_UNKNOWN_PROTOCOL.into(), b"unknown protocol"),
            }
        });
    }
}

async fn serve_client(connection: quinn::Connection, clients: mpsc::Sender<ClientInput>) {
    // QUIC's stream limit (100 concurrent by default) bounds the tasks per connection.
    while let Ok((send, recv)) = connection.accept_bi().await {
        tokio::spawn(serve_stream(send, recv, clients.clone()));
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    clients: mpsc::Sender<ClientInput>,
) {
    let answer = match read_request(&mut recv).await {
        Ok(request) => answer(request, &clients).await,
        Err(reason) => {
            let _ = recv.stop(0u32.into());
            malformed(reason)
        }
    };
    let Ok(frame) = wire::encode(&answer) else {
        let _ = send.reset(0u32.into());
        return;
    };
    if send.write_all(&frame).await.is_ok() {
        let _ = send.finish();
    }
}

/// The node's answer to one well-formed request.
async fn answer(request: ToNode, clients: &mpsc::Sender<ClientInput>) -> FromNode {
    if let Some(refused) = check_address(&request).await {
        return refused;
    }
    let (reply, answer) = oneshot::channel();
    let failed = || node_failed("the node is shutting down");
    if clients.send(ClientInput { request, reply }).await.is_err() {
        return failed();
    }
    answer.await.unwrap_or_else(|_| failed())
}

/// A member added at an address that does not resolve is refused here, on the client's
/// stream, so the lookup never runs on the driver.
async fn check_address(request: &ToNode) -> Option<FromNode> {
    let ToNode::Admin(AdminRequest::AddMember { address, .. }) = request else {
        return None;
    };
    if super::config::lookup_one(address).await.is_some() {
        return None;
    }
    let address = address.clone();
    Some(FromNode::Admin(Err(AdminError::InvalidAddress { address })))
}

/// Reads one request frame: the whole stream, at most one frame long.
async fn read_request(recv: &mut quinn::RecvStream) -> Result<ToNode, String> {
    let bytes = recv
        .read_to_end(wire::HEADER_BYTES + wire::FRAME_BYTES_MAX)
        .await
        .map_err(|error| format!("reading the request: {error}"))?;
    let (request, used) =
        wire::decode::<ToNode>(&bytes).map_err(|error| format!("decoding the request: {error}"))?;
    if used != bytes.len() {
        return Err(format!(
            "{} bytes after the request frame",
            bytes.len() - used
        ));
    }
    Ok(request)
}

fn malformed(reason: String) -> FromNode {
    FromNode::data_error(ClientError::Malformed { reason })
}

fn node_failed(reason: &str) -> FromNode {
    FromNode::data_error(ClientError::NodeFailed {
        reason: reason.to_string(),
    })
}
