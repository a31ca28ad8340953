//! The QUIC side of the node: one endpoint for peers and clients, told apart by ALPN.
//!
//! Peer connections go to the transport. A client connection carries one request per
//! bidirectional stream: one [`ToNode`] frame in, one [`FromNode`] frame out. A stream whose
//! bytes are not one well-formed frame is answered with `ClientError::Malformed` and closed;
//! the connection and the node carry on.
//!
//! What clients can make a node hold is bounded: [`CLIENT_CONNECTIONS_MAX`] connections, QUIC's
//! 100 concurrent streams per connection, [`REQUEST_BYTES_BUDGET`] bytes of requests being
//! read across all of them (taken from the budget once a frame's header names its length,
//! before anything is allocated), and [`STREAM_DEADLINE`] for a request to arrive and for its
//! answer to be taken: a stream that trickles or never reads is cut.

use super::core::{PeerMessage, admit};
use super::driver::ClientInput;
use crate::net::peer::{Inbound, Transport};
use crate::net::tls::{self, Caller};
use crate::protocol::ClientError;
use crate::protocol::admin::{AdminError, AdminRequest, FromNode, ToNode};
use crate::wire;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// QUIC application error code for a connection with an unknown ALPN.
const CLOSE_UNKNOWN_PROTOCOL: u32 = 0x20;
/// QUIC application error code for a client connection past [`CLIENT_CONNECTIONS_MAX`].
const CLOSE_TOO_MANY_CONNECTIONS: u32 = 0x21;
/// QUIC application error code for a client certificate that names no node or client.
const CLOSE_UNNAMED_CERTIFICATE: u32 = 0x22;

/// Client connections a node serves at once; one more is closed at once.
pub const CLIENT_CONNECTIONS_MAX: usize = 1024;
/// Bytes of requests all client streams together may hold while they are read. A frame's
/// length is taken from it before the frame is read, so a full budget makes new streams wait
/// (under their deadline) instead of growing memory.
pub const REQUEST_BYTES_BUDGET: usize = 64 * 1024 * 1024;
/// How long a request may take to arrive, and its answer to be taken.
pub const STREAM_DEADLINE: Duration = Duration::from_secs(10);

const _: () = assert!(wire::FRAME_BYTES_MAX <= REQUEST_BYTES_BUDGET);

/// What the client streams of one node share.
#[derive(Clone)]
struct Limits {
    connections: Arc<Semaphore>,
    request_bytes: Arc<Semaphore>,
}

/// Accepts connections until the endpoint closes.
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    transport: Arc<Transport<PeerMessage>>,
    clients: mpsc::Sender<ClientInput>,
    peers: mpsc::Sender<Inbound<PeerMessage>>,
) {
    let limits = Limits {
        connections: Arc::new(Semaphore::new(CLIENT_CONNECTIONS_MAX)),
        request_bytes: Arc::new(Semaphore::new(REQUEST_BYTES_BUDGET)),
    };
    while let Some(incoming) = endpoint.accept().await {
        let transport = transport.clone();
        let clients = clients.clone();
        let peers = peers.clone();
        let limits = limits.clone();
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
                Some(tls::ALPN_CLIENT) => {
                    let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
                        let reason = b"too many client connections";
                        connection.close(CLOSE_TOO_MANY_CONNECTIONS.into(), reason);
                        return;
                    };
                    // Who the certificate names decides what each request may do.
                    let Ok(caller) = tls::peer_caller(&connection) else {
                        let reason = b"the certificate names no node or client";
                        connection.close(CLOSE_UNNAMED_CERTIFICATE.into(), reason);
                        return;
                    };
                    serve_client(connection, caller, clients, limits.request_bytes, permit).await
                }
                _ => connection.close(CLOSE_UNKNOWN_PROTOCOL.into(), b"unknown protocol"),
            }
        });
    }
}

/// Serves one client connection while it holds one of the node's connection permits.
async fn serve_client(
    connection: quinn::Connection,
    caller: Caller,
    clients: mpsc::Sender<ClientInput>,
    request_bytes: Arc<Semaphore>,
    _permit: OwnedSemaphorePermit,
) {
    let caller = Arc::new(caller);
    // QUIC's stream limit (100 concurrent by default) bounds the tasks per connection.
    while let Ok((send, recv)) = connection.accept_bi().await {
        let budget = request_bytes.clone();
        let stream = serve_stream(send, recv, caller.clone(), clients.clone(), budget);
        tokio::spawn(stream);
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    caller: Arc<Caller>,
    clients: mpsc::Sender<ClientInput>,
    budget: Arc<Semaphore>,
) {
    let read = tokio::time::timeout(STREAM_DEADLINE, read_request(&mut recv, &budget));
    let request = read.await.unwrap_or_else(|_| {
        Err(format!(
            "the request did not arrive within {}s",
            STREAM_DEADLINE.as_secs()
        ))
    });
    let answer = match request {
        Ok(request) => answer(&caller, request, &clients).await,
        Err(reason) => {
            let _ = recv.stop(0u32.into());
            malformed(reason)
        }
    };
    let Ok(frame) = wire::encode(&answer) else {
        let _ = send.reset(0u32.into());
        return;
    };
    match tokio::time::timeout(STREAM_DEADLINE, send.write_all(&frame)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
        }
        // A client that does not take its answer in time loses it.
        Ok(Err(_)) | Err(_) => {
            let _ = send.reset(0u32.into());
        }
    }
}

/// The node's answer to one well-formed request: refused here if the caller may not send it.
async fn answer(caller: &Caller, request: ToNode, clients: &mpsc::Sender<ClientInput>) -> FromNode {
    let request = match admit(caller, request) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    if let Some(refused) = check_address(request.request()).await {
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

/// Reads one request frame, the whole stream: the header first, then as many bytes as it
/// names, taken from the node's request budget before they are allocated.
async fn read_request(recv: &mut quinn::RecvStream, budget: &Semaphore) -> Result<ToNode, String> {
    let reading = |error: quinn::ReadExactError| format!("reading the request: {error}");
    let mut header = [0u8; wire::HEADER_BYTES];
    recv.read_exact(&mut header).await.map_err(reading)?;
    let length =
        wire::decode_header(&header).map_err(|error| format!("decoding the request: {error}"))?;
    let permits = u32::try_from(length).expect("invariant: a frame length fits the header's u32");
    let _held = budget
        .acquire_many(permits)
        .await
        .map_err(|_| "the node is shutting down".to_string())?;
    let mut frame = vec![0u8; wire::HEADER_BYTES + length];
    frame[..wire::HEADER_BYTES].copy_from_slice(&header);
    recv.read_exact(&mut frame[wire::HEADER_BYTES..])
        .await
        .map_err(reading)?;
    let mut more = [0u8; 1];
    match recv.read(&mut more).await {
        Ok(None) => {}
        Ok(Some(_)) => return Err("bytes after the request frame".to_string()),
        Err(error) => return Err(format!("reading the request: {error}")),
    }
    let (request, _) =
        wire::decode::<ToNode>(&frame).map_err(|error| format!("decoding the request: {error}"))?;
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
