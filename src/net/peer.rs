//! Links between nodes: one QUIC connection per peer, two streams on it.
//!
//! Each node dials every peer it sends to (and accepts the peers that dial it), so a pair of
//! nodes may hold two connections, one per direction: that keeps the code symmetric and
//! reconnecting simple. On each outbound connection the sender opens two unidirectional
//! streams, one per [`Lane`]: Raft traffic goes on a stream of higher priority than gossip
//! and anti-entropy, so a repair burst never delays a heartbeat.
//!
//! Every stream starts with a [`StreamHello`] naming the sender, which the receiver checks
//! against the sender's certificate; then it carries frames from [`crate::wire`].
//!
//! Messages are queued per peer and lane ([`super::queue`]), bounded by count and bytes, each
//! with the time it may leave (a delay rule sets it later; no task waits per message). A full
//! queue is a typed [`SendError::Backpressure`], not unbounded memory: Raft and anti-entropy
//! both recover from a lost message. When a connection fails, whatever was in its streams is
//! lost the same way, and the link reconnects with exponential backoff.

use super::faults::{FaultRules, Verdict};
pub use super::queue::QUEUE_FRAMES_MAX;
use super::queue::{LaneQueue, QUEUE_BYTES_MAX, Refused};
use super::tls::{self, Identity};
use crate::rng::SeededRng;
use crate::types::NodeId;
use crate::wire;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// Reconnect backoff doubles from the first value up to the second.
pub const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(20), Duration::from_secs(2));

const RAFT_PRIORITY: i32 = 10;
const GOSSIP_PRIORITY: i32 = 0;
/// QUIC application error code for a peer that claims a name its certificate does not hold.
const CLOSE_WRONG_IDENTITY: u32 = 0x10;

/// Which stream a message travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lane {
    /// Raft messages: small, latency-sensitive, never starved.
    Raft,
    /// Gossip deltas and anti-entropy: bulk, may wait.
    Gossip,
}

/// The first frame on every stream between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHello {
    pub from: NodeId,
    pub lane: Lane,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    #[error("{to} is not a peer of this node")]
    UnknownPeer { to: NodeId },
    #[error("the queue to {to} is full ({queue_max} frames or {bytes_max} bytes)")]
    Backpressure {
        to: NodeId,
        queue_max: usize,
        bytes_max: usize,
    },
    #[error("the message does not fit in a frame")]
    TooLarge,
    #[error("the transport has shut down")]
    Closed,
}

/// A message from a peer, after the receive-side fault rules let it through.
#[derive(Debug)]
pub struct Inbound<M> {
    pub from: NodeId,
    pub message: M,
}

struct PeerQueues {
    raft: Arc<LaneQueue>,
    gossip: Arc<LaneQueue>,
    address: SocketAddr,
}

/// The link's task ends with its queues: when the peer moves or the transport goes.
impl Drop for PeerQueues {
    fn drop(&mut self) {
        self.raft.close();
        self.gossip.close();
    }
}

/// The node's side of every peer link. Cheap to share behind an `Arc`.
pub struct Transport<M> {
    id: NodeId,
    /// Grows when a member joins (`add_peer`); a removed member's link stays, unused.
    peers: RwLock<BTreeMap<NodeId, PeerQueues>>,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    faults: Arc<RwLock<FaultRules>>,
    rng: Mutex<SeededRng>,
    _message: PhantomData<fn(M)>,
}

/// What a transport needs to start.
pub struct TransportConfig {
    pub id: NodeId,
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Seeds the loss and jitter draws of the fault rules.
    pub rng_seed: u64,
}

impl<M: Serialize + DeserializeOwned + Send + 'static> Transport<M> {
    /// Starts one dialling task per peer on `endpoint`. Inbound connections are handed in by
    /// the node's accept loop through [`Transport::serve_connection`].
    pub fn start(
        config: TransportConfig,
        identity: &Identity,
        endpoint: quinn::Endpoint,
    ) -> Result<Arc<Transport<M>>, tls::CertError> {
        let client_config = identity.client_config(tls::ALPN_PEER)?;
        let transport = Arc::new(Transport {
            id: config.id,
            peers: RwLock::new(BTreeMap::new()),
            endpoint,
            client_config,
            faults: Arc::new(RwLock::new(FaultRules::none())),
            rng: Mutex::new(SeededRng::new(config.rng_seed)),
            _message: PhantomData,
        });
        for (peer, address) in config.peers {
            transport.add_peer(peer, address);
        }
        Ok(transport)
    }

    /// Starts the link to `peer`, or moves it to a new address (a no-op for this node or a
    /// peer already linked at `address`). Replacing the queues ends the old link's task.
    pub fn add_peer(&self, peer: NodeId, address: SocketAddr) {
        let mut peers = self.peers.write().expect("peer map lock is never poisoned");
        let linked = peers
            .get(&peer)
            .is_some_and(|queues| queues.address == address);
        if peer == self.id || linked {
            return;
        }
        let (raft, gossip) = (Arc::new(LaneQueue::new()), Arc::new(LaneQueue::new()));
        let (raft_rx, gossip_rx) = (raft.clone(), gossip.clone());
        let dialler = Dialler {
            from: self.id,
            to: peer,
            address,
            endpoint: self.endpoint.clone(),
            client_config: self.client_config.clone(),
        };
        tokio::spawn(dialler.run(raft_rx, gossip_rx));
        let queues = PeerQueues {
            raft,
            gossip,
            address,
        };
        peers.insert(peer, queues);
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Queues `message` for `to`. Fault rules apply here (send side) and again on receipt.
    pub fn send(&self, to: NodeId, lane: Lane, message: &M) -> Result<(), SendError> {
        let queue = {
            let peers = self.peers.read().expect("peer map lock is never poisoned");
            let queues = peers.get(&to).ok_or(SendError::UnknownPeer { to })?;
            match lane {
                Lane::Raft => queues.raft.clone(),
                Lane::Gossip => queues.gossip.clone(),
            }
        };
        let frame = wire::encode(message).map_err(|_| SendError::TooLarge)?;
        match self.verdict(self.id, to) {
            Verdict::Drop => Ok(()),
            // A delayed message waits in the queue, not in a task of its own.
            Verdict::Deliver { delay } => enqueue(&queue, to, frame, delay),
        }
    }

    /// Replaces the fault rules in force.
    pub fn set_faults(&self, rules: FaultRules) {
        *self
            .faults
            .write()
            .expect("fault rules lock is never poisoned") = rules;
    }

    pub fn faults(&self) -> FaultRules {
        self.faults
            .read()
            .expect("fault rules lock is never poisoned")
            .clone()
    }

    fn verdict(&self, from: NodeId, to: NodeId) -> Verdict {
        let faults = self
            .faults
            .read()
            .expect("fault rules lock is never poisoned");
        let mut rng = self.rng.lock().expect("rng lock is never poisoned");
        faults.verdict(from, to, &mut rng)
    }

    /// Serves an accepted connection whose ALPN is [`tls::ALPN_PEER`]: reads every stream the
    /// peer opens and forwards its messages to `inbound` until the connection ends.
    pub async fn serve_connection(
        self: Arc<Self>,
        connection: quinn::Connection,
        inbound: mpsc::Sender<Inbound<M>>,
    ) {
        // Only nodes speak this protocol: a client certificate is turned away before any
        // stream is read (each could otherwise have a frame of up to the limit buffered).
        if tls::peer_is_any_node(&connection).is_err() {
            connection.close(CLOSE_WRONG_IDENTITY.into(), b"not a node certificate");
            return;
        }
        while let Ok(stream) = connection.accept_uni().await {
            let transport = self.clone();
            let connection = connection.clone();
            let inbound = inbound.clone();
            tokio::spawn(async move {
                if let Err(StreamEnd::WrongIdentity) =
                    transport.read_stream(&connection, stream, inbound).await
                {
                    connection.close(CLOSE_WRONG_IDENTITY.into(), b"certificate does not match");
                }
            });
        }
    }

    async fn read_stream(
        &self,
        connection: &quinn::Connection,
        mut stream: quinn::RecvStream,
        inbound: mpsc::Sender<Inbound<M>>,
    ) -> Result<(), StreamEnd> {
        let hello: StreamHello = read_frame(&mut stream, HELLO_BYTES_MAX).await?;
        let from = hello.from;
        tls::peer_is_node(connection, &from.to_string()).map_err(|_| StreamEnd::WrongIdentity)?;
        loop {
            let message: M = read_frame(&mut stream, wire::FRAME_BYTES_MAX).await?;
            if self.verdict(from, self.id) == Verdict::Drop {
                continue;
            }
            inbound
                .send(Inbound { from, message })
                .await
                .map_err(|_| StreamEnd::Closed)?;
        }
    }
}

fn enqueue(
    queue: &LaneQueue,
    to: NodeId,
    frame: Vec<u8>,
    delay: Duration,
) -> Result<(), SendError> {
    let at = tokio::time::Instant::now() + delay;
    queue.push(frame, at).map_err(|refused| match refused {
        Refused::Full => SendError::Backpressure {
            to,
            queue_max: QUEUE_FRAMES_MAX,
            bytes_max: QUEUE_BYTES_MAX,
        },
        Refused::Closed => SendError::Closed,
    })
}

/// Why a stream stopped being read.
#[derive(Debug)]
enum StreamEnd {
    /// The stream or connection ended, or sent a malformed frame.
    Broken,
    /// The hello named a node the certificate does not belong to.
    WrongIdentity,
    /// The node no longer takes messages.
    Closed,
}

/// The most a stream's hello may take: its identity is checked before anything larger is read.
const HELLO_BYTES_MAX: usize = 256;

/// Reads one frame of at most `bytes_max` (below the wire's own limit): the header first, so
/// the length is checked before anything is allocated.
async fn read_frame<T: DeserializeOwned>(
    stream: &mut quinn::RecvStream,
    bytes_max: usize,
) -> Result<T, StreamEnd> {
    let mut header = [0u8; wire::HEADER_BYTES];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|_| StreamEnd::Broken)?;
    let length = wire::decode_header(&header).map_err(|_| StreamEnd::Broken)?;
    if length > bytes_max {
        return Err(StreamEnd::Broken);
    }
    let mut frame = vec![0u8; wire::HEADER_BYTES + length];
    frame[..wire::HEADER_BYTES].copy_from_slice(&header);
    stream
        .read_exact(&mut frame[wire::HEADER_BYTES..])
        .await
        .map_err(|_| StreamEnd::Broken)?;
    let (message, _) = wire::decode(&frame).map_err(|_| StreamEnd::Broken)?;
    Ok(message)
}

/// The task that keeps one outbound link up and drains its two queues into it.
struct Dialler {
    from: NodeId,
    to: NodeId,
    address: SocketAddr,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
}

impl Dialler {
    async fn run(self, raft: Arc<LaneQueue>, gossip: Arc<LaneQueue>) {
        let mut backoff = RECONNECT_BACKOFF.0;
        loop {
            if raft.is_closed() && gossip.is_closed() {
                return;
            }
            match self.connect().await {
                Ok((raft_stream, gossip_stream)) => {
                    backoff = RECONNECT_BACKOFF.0;
                    let drained = drain(&raft, &gossip, raft_stream, gossip_stream).await;
                    if drained == Drained::QueuesClosed {
                        return;
                    }
                }
                Err(()) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
                }
            }
        }
    }

    async fn connect(&self) -> Result<(quinn::SendStream, quinn::SendStream), ()> {
        let name = tls::node_server_name(&self.to.to_string());
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), self.address, &name)
            .map_err(|_| ())?;
        let connection = connecting.await.map_err(|_| ())?;
        let raft = self
            .open_lane(&connection, Lane::Raft, RAFT_PRIORITY)
            .await?;
        let gossip = self
            .open_lane(&connection, Lane::Gossip, GOSSIP_PRIORITY)
            .await?;
        Ok((raft, gossip))
    }

    async fn open_lane(
        &self,
        connection: &quinn::Connection,
        lane: Lane,
        priority: i32,
    ) -> Result<quinn::SendStream, ()> {
        let mut stream = connection.open_uni().await.map_err(|_| ())?;
        stream.set_priority(priority).map_err(|_| ())?;
        let hello = wire::encode(&StreamHello {
            from: self.from,
            lane,
        })
        .map_err(|_| ())?;
        stream.write_all(&hello).await.map_err(|_| ())?;
        Ok(stream)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Drained {
    ConnectionLost,
    QueuesClosed,
}

/// Writes queued frames until the connection fails. Raft frames go first when both queues
/// have work (`biased`), on top of the stream priorities QUIC already applies.
async fn drain(
    raft: &LaneQueue,
    gossip: &LaneQueue,
    mut raft_stream: quinn::SendStream,
    mut gossip_stream: quinn::SendStream,
) -> Drained {
    loop {
        let written = tokio::select! {
            biased;
            frame = raft.pop() => match frame {
                Some(frame) => raft_stream.write_all(&frame).await,
                None => return Drained::QueuesClosed,
            },
            frame = gossip.pop() => match frame {
                Some(frame) => gossip_stream.write_all(&frame).await,
                None => return Drained::QueuesClosed,
            },
        };
        if written.is_err() {
            return Drained::ConnectionLost;
        }
    }
}
