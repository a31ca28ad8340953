//! A fuzzing harness that runs in `cargo test`: frames a hostile client or peer could send,
//! made by mutating valid ones (flipped, replaced, cut and appended bytes), go through the wire
//! decoder and, when they decode, into a real `NodeCore` (with a real, in-memory redb store)
//! as a client request or a peer message. Nothing may panic, and the core must go on: no
//! `CoreError` (which would stop the node) and it still answers a status request afterwards.
//! A frame found to break something becomes a test of its own, its bytes written out.

mod common;

use capdial::eventual::ValueType;
use capdial::net::tls::{Caller, Role};
use capdial::node::core::{CoreConfig, NodeCore, PeerMessage, ReplyTo, admit};
use capdial::protocol::admin::{AdminRequest, FromNode, ToNode};
use capdial::protocol::{ClientRequest, KeyspaceMode, ReadLevel, WriteLevel};
use capdial::storage::Store;
use capdial::types::{Instant, LogIndex, NodeId, WallMillis};
use capdial::wire;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const STEP: Duration = Duration::from_millis(10);

/// One node's core on an in-memory store, driven by hand: timers, persists, answers.
struct Node {
    core: NodeCore,
    store: Arc<Store>,
    now: Instant,
    wall: u64,
    answers: Vec<(ReplyTo, FromNode)>,
    transmits: Vec<PeerMessage>,
}

impl Node {
    fn boot(members: &[u64]) -> Node {
        let cluster: BTreeMap<NodeId, String> = members
            .iter()
            .map(|id| (NodeId(*id), format!("127.0.0.1:{}", 7000 + id)))
            .collect();
        let config = CoreConfig::new(NodeId(1), cluster[&NodeId(1)].clone(), cluster);
        let store = Arc::new(Store::in_memory(NodeId(1)).expect("an in-memory store"));
        let now = Instant::from_nanos(1_000_000_000);
        let core = NodeCore::boot(config, store.clone(), 7, now).expect("the core boots");
        Node {
            core,
            store,
            now,
            wall: 1_800_000_000_000,
            answers: Vec::new(),
            transmits: Vec::new(),
        }
    }

    fn wall(&self) -> WallMillis {
        WallMillis(self.wall)
    }

    /// Persists, sends (into `transmits`) and answers until the core is quiet.
    fn drain(&mut self) {
        for _ in 0..1000 {
            while let Some(transmit) = self.core.poll_transmit() {
                self.transmits.push(transmit.message);
            }
            while let Some(answer) = self.core.poll_answer() {
                self.answers.push(answer);
            }
            let batch = self
                .core
                .poll_persist()
                .expect("no CoreError from the inputs");
            let Some(batch) = batch else { return };
            self.store.commit(batch).expect("the store commits");
            let wall = self.wall();
            self.core
                .persisted(self.now, wall)
                .expect("no CoreError from the inputs");
        }
        panic!("the core never went quiet");
    }

    /// Lets `duration` pass, firing the core's timers as they fall due.
    fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += STEP;
            self.wall += STEP.as_millis() as u64;
            if self.core.poll_timeout() <= self.now {
                let wall = self.wall();
                self.core.handle_timeout(self.now, wall);
            }
            self.drain();
        }
    }

    /// Sends `request` and runs until its answer comes (or `wait` passes).
    fn request(&mut self, tag: u64, request: ToNode, wait: Duration) -> Option<FromNode> {
        let wall = self.wall();
        match admit(&admin(), request) {
            Ok(request) => self
                .core
                .handle_client(self.now, wall, ReplyTo(tag), request),
            Err(refused) => return Some(*refused),
        }
        self.drain();
        let end = self.now + wait;
        loop {
            if let Some(at) = self.answers.iter().position(|(to, _)| to.0 == tag) {
                return Some(self.answers.remove(at).1);
            }
            if self.now >= end {
                return None;
            }
            self.run_for(STEP);
        }
    }

    fn assert_serves(&mut self) {
        let status = ToNode::Admin(AdminRequest::Status);
        let answer = self.request(u64::MAX, status, Duration::from_secs(5));
        assert!(
            matches!(answer, Some(FromNode::Admin(Ok(_)))),
            "the node still answers status: {answer:?}"
        );
    }
}

/// A one-member node leading group 0, with a strong and an eventual keyspace.
fn serving_node() -> Node {
    let mut node = Node::boot(&[1]);
    node.run_for(Duration::from_secs(3));
    for (tag, (name, mode)) in [
        ("st", KeyspaceMode::Strong),
        ("ev", KeyspaceMode::Eventual(ValueType::Lww)),
    ]
    .into_iter()
    .enumerate()
    {
        let create = ToNode::Admin(AdminRequest::CreateKeyspace {
            name: name.to_string(),
            mode,
        });
        let answer = node.request(tag as u64, create, Duration::from_secs(5));
        assert!(matches!(answer, Some(FromNode::Admin(Ok(_)))), "{answer:?}");
    }
    node.run_for(Duration::from_secs(1));
    node
}

/// Valid client frames of every kind: the seeds the mutations start from.
fn client_corpus() -> Vec<Vec<u8>> {
    use common::{op, request};
    let lease = ClientRequest {
        read: Some(ReadLevel::Lease),
        ..request(42, "st", 7, op::get("k"))
    };
    let quorum = ClientRequest {
        write: Some(WriteLevel::Quorum),
        ..request(42, "ev", 8, op::put("q", "v"))
    };
    let data = [
        request(42, "st", 1, op::put("k", "v")),
        request(42, "st", 2, op::get("k")),
        request(42, "st", 3, op::cas("k", Some(LogIndex(1)), "w")),
        request(42, "st", 4, op::scan("", 10)),
        request(42, "st", 5, op::delete("k")),
        request(42, "ev", 6, op::put("e", "v")),
        request(42, "ev", 7, op::get("e")),
        lease,
        quorum,
    ];
    let admin = [AdminRequest::Status, AdminRequest::ListKeyspaces];
    data.into_iter()
        .map(ToNode::Data)
        .chain(admin.into_iter().map(ToNode::Admin))
        .map(|request| wire::encode(&request).expect("a valid request encodes"))
        .collect()
}

/// Valid peer frames: what a three-member node sends while it campaigns and gossips.
fn peer_corpus() -> Vec<Vec<u8>> {
    let mut node = Node::boot(&[1, 2, 3]);
    node.run_for(Duration::from_secs(3));
    let mut frames: Vec<Vec<u8>> = node
        .transmits
        .iter()
        .map(|message| wire::encode(message).expect("a sent message encodes"))
        .collect();
    frames.sort();
    frames.dedup();
    assert!(!frames.is_empty(), "a campaigning node sends something");
    frames
}

/// One change to a frame.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Cut { at: usize },
    Append { bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Cut { at }),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(|bytes| Mutation::Append { bytes }),
    ]
}

/// `frame` with `mutations` applied; with `fix_length`, the header then announces the payload
/// as it now is, so the mutated payload reaches the decoder instead of failing on its length.
fn mutate(mut frame: Vec<u8>, mutations: &[Mutation], fix_length: bool) -> Vec<u8> {
    for mutation in mutations {
        let len = frame.len().max(1);
        match mutation {
            Mutation::Flip { at, bit } => {
                if let Some(byte) = frame.get_mut(at % len) {
                    *byte ^= 1 << bit;
                }
            }
            Mutation::Set { at, byte } => {
                if let Some(slot) = frame.get_mut(at % len) {
                    *slot = *byte;
                }
            }
            Mutation::Cut { at } => frame.truncate(at % len),
            Mutation::Append { bytes } => frame.extend_from_slice(bytes),
        }
    }
    if fix_length && frame.len() >= wire::HEADER_BYTES {
        let payload = (frame.len() - wire::HEADER_BYTES) as u32;
        frame[1..wire::HEADER_BYTES].copy_from_slice(&payload.to_le_bytes());
    }
    frame
}

fn admin() -> Caller {
    Caller {
        name: "fuzzer".to_string(),
        role: Role::Admin,
    }
}

fn feed_client(node: &mut Node, frame: &[u8], tag: u64) {
    if let Ok((request, _)) = wire::decode::<ToNode>(frame) {
        let wall = node.wall();
        // An admin may send anything: the most that can reach the core.
        if let Ok(request) = admit(&admin(), request) {
            node.core
                .handle_client(node.now, wall, ReplyTo(tag), request);
        }
        node.drain();
        node.run_for(Duration::from_millis(200));
    }
}

fn feed_peer(node: &mut Node, frame: &[u8], from: u64) {
    if let Ok((message, _)) = wire::decode::<PeerMessage>(frame) {
        let wall = node.wall();
        node.core.handle_peer(node.now, wall, NodeId(from), message);
        node.drain();
        node.run_for(Duration::from_millis(200));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// Mutated client frames: decoded or refused by the codec, never a panic; decoded ones
    /// are answered or refused by the core, which keeps serving.
    #[test]
    fn mutated_client_frames_never_stop_the_node(
        picks in prop::collection::vec((any::<prop::sample::Index>(),
            prop::collection::vec(mutation(), 1..6), any::<bool>()), 1..8)
    ) {
        let corpus = client_corpus();
        let mut node = serving_node();
        for (tag, (pick, mutations, fix_length)) in picks.iter().enumerate() {
            let frame = mutate(pick.get(&corpus).clone(), mutations, *fix_length);
            feed_client(&mut node, &frame, tag as u64);
        }
        node.assert_serves();
    }

    /// Mutated peer frames from a member (n2 of n1..n3): decoded or refused by the codec,
    /// never a panic; decoded ones are handled by the core, which keeps going.
    #[test]
    fn mutated_peer_frames_never_stop_the_node(
        picks in prop::collection::vec((any::<prop::sample::Index>(),
            prop::collection::vec(mutation(), 1..6), any::<bool>()), 1..8)
    ) {
        let corpus = peer_corpus();
        let mut node = Node::boot(&[1, 2, 3]);
        node.run_for(Duration::from_secs(1));
        for (pick, mutations, fix_length) in &picks {
            let frame = mutate(pick.get(&corpus).clone(), mutations, *fix_length);
            feed_peer(&mut node, &frame, 2);
        }
        node.run_for(Duration::from_secs(1));
        node.assert_serves();
    }
}
