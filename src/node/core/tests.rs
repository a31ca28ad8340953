//! The core's own tests; the node simulator (`sim::node`) drives whole clusters of it.

use super::*;
use crate::protocol::admin::{AdminRequest, FromNode, ToNode};
use crate::protocol::{Answer, ClientError, ClientRequest, Operation};
use crate::raft::Config as RaftConfig;
use crate::raft::{ProposalId, Ready, Role};
use crate::strong::{Command, Request};
use crate::types::LogIndex;
use bytes::Bytes;
use std::collections::BTreeMap;

/// Runs a one-voter replica's timers and Readies until `until` holds, checking each
/// `on_persisted` with `check_faults`; returns how many faults it let pass, or the first
/// error.
fn pump(
    replica: &mut Replica<u64>,
    now: &mut Instant,
    until: impl Fn(&Replica<u64>) -> bool,
    tamper: impl Fn(&mut Ready),
) -> Result<usize, CoreError> {
    let mut passed = 0;
    for _ in 0..1000 {
        if until(replica) {
            return Ok(passed);
        }
        *now += Duration::from_millis(10);
        if replica.poll_timeout().is_some_and(|at| at <= *now) {
            replica.handle_timeout(*now);
        }
        while let Some(mut ready) = replica.take_ready() {
            if let Some(raft) = &mut ready.raft {
                tamper(raft);
            }
            let applied = replica.on_persisted(ready);
            passed += applied.faults.len();
            check_faults(GroupId(7), applied.faults)?;
        }
    }
    panic!("the replica never got there");
}

/// Issue 9: a replica that applied an entry out of order used to be logged as a
/// `replica fault` while the node went on serving its diverged state. Now the fault
/// ends the driver with `CoreError::Invariant` naming the group; a malformed entry,
/// which every replica skips alike, does not.
#[test]
fn an_out_of_order_apply_stops_the_node_and_a_malformed_entry_does_not() {
    let config = ReplicaConfig {
        raft: RaftConfig::new(NodeId(1), vec![NodeId(1)]),
        machine: MachineConfig::default(),
        compact_every: 10_000,
    };
    let mut now = Instant::from_nanos(0);
    let store: Arc<dyn MachineStore> = Arc::new(crate::strong::MemoryMachineStore::new());
    let durable = DurableState::default();
    let mut replica = Replica::<u64>::boot(config, durable, store, GroupId(7), 1, now)
        .expect("a fresh replica boots");
    let leader = |r: &Replica<u64>| r.status().role == Role::Leader && r.status().applied.0 > 0;
    let passed = pump(&mut replica, &mut now, leader, |_| {}).expect("an election");
    assert_eq!(passed, 0, "an election breaks nothing");

    // Bytes that are not a request: applied as a no-op on every replica; not fatal.
    let garbage = Bytes::from_static(b"not a request");
    let index = replica
        .raft_mut()
        .propose(now, ProposalId(1), garbage)
        .expect("the leader takes a proposal");
    let applied_to = |index: LogIndex| move |r: &Replica<u64>| r.status().applied >= index;
    let passed = pump(&mut replica, &mut now, applied_to(index), |_| {})
        .expect("a malformed entry does not stop the node");
    assert_eq!(passed, 1, "the malformed entry is reported, and let pass");

    let request = Request {
        client: ClientId(1),
        seq: 1,
        first_unacked: 1,
        opens_session: true,
        proposed_at: WallMillis(0),
        command: Command::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        },
    };
    let index = replica
        .submit(now, WallMillis(0), ProposalId(2), 2, &request)
        .expect("the leader takes a write");
    // The core hands the entry out two indexes ahead of where the machine stands.
    let skip = |ready: &mut Ready| {
        for entry in &mut ready.committed {
            entry.index = LogIndex(entry.index.0 + 2);
        }
    };
    let error = pump(&mut replica, &mut now, applied_to(index), skip)
        .expect_err("an out-of-order apply stops the node");
    match &error {
        CoreError::Invariant {
            group,
            fault: ApplyFault::OutOfOrder { got, expected },
        } => {
            assert_eq!(*group, GroupId(7));
            assert_eq!(*got, index.0 + 2);
            assert_eq!(*expected, index.0);
        }
        other => panic!("expected an invariant error, got {other:?}"),
    }
    assert_eq!(error.to_string(), "raft group 7 broke a local invariant");
}

/// A one-member node's core on an in-memory store, driven by hand.
struct OneNode {
    core: NodeCore,
    store: Arc<crate::storage::Store>,
    now: Instant,
    wall: WallMillis,
    answers: Vec<(ReplyTo, FromNode)>,
}

impl OneNode {
    fn serving_strong(keyspace: &str) -> OneNode {
        let mut node = OneNode::fresh();
        let create = ToNode::Admin(AdminRequest::CreateKeyspace {
            name: keyspace.to_string(),
            mode: crate::protocol::KeyspaceMode::Strong,
        });
        let created = node.ask(create);
        assert!(matches!(created, FromNode::Admin(Ok(_))), "{created:?}");
        node.run_for(Duration::from_secs(1));
        node
    }

    /// A node whose catalog has elected its leader, and holds no keyspace.
    fn fresh() -> OneNode {
        let address = "127.0.0.1:7001".to_string();
        let cluster = BTreeMap::from([(NodeId(1), address.clone())]);
        let config = CoreConfig::new(NodeId(1), address, cluster);
        let store = Arc::new(crate::storage::Store::in_memory(NodeId(1)).expect("a store"));
        let now = Instant::from_nanos(1_000_000_000);
        let core = NodeCore::boot(config, store.clone(), 7, now).expect("the core boots");
        let mut node = OneNode {
            core,
            store,
            now,
            wall: WallMillis(1_800_000_000_000),
            answers: Vec::new(),
        };
        node.run_for(Duration::from_secs(3));
        node
    }

    /// Persists and answers until the core is quiet.
    fn drain(&mut self) {
        for _ in 0..1000 {
            while self.core.poll_transmit().is_some() {}
            while let Some(answer) = self.core.poll_answer() {
                self.answers.push(answer);
            }
            let Some(batch) = self.core.poll_persist().expect("no core error") else {
                return;
            };
            self.store.commit(batch).expect("the store commits");
            self.core
                .persisted(self.now, self.wall)
                .expect("no core error");
        }
        panic!("the core never went quiet");
    }

    fn run_for(&mut self, duration: Duration) {
        let step = Duration::from_millis(10);
        let end = self.now + duration;
        while self.now < end {
            self.now += step;
            self.wall.0 += 10;
            if self.core.poll_timeout() <= self.now {
                self.core.handle_timeout(self.now, self.wall);
            }
            self.drain();
        }
    }

    /// Sends `request` and runs until its answer comes.
    fn ask(&mut self, request: ToNode) -> FromNode {
        let tag = ReplyTo(self.answers.len() as u64 + 1_000);
        let caller = crate::net::tls::Caller {
            name: "test".to_string(),
            role: crate::net::tls::Role::Admin,
        };
        match admit(&caller, request) {
            Ok(request) => self.core.handle_client(self.now, self.wall, tag, request),
            Err(refused) => return *refused,
        }
        for _ in 0..1000 {
            self.drain();
            if let Some(at) = self.answers.iter().position(|(to, _)| *to == tag) {
                return self.answers.remove(at).1;
            }
            self.run_for(Duration::from_millis(10));
        }
        panic!("no answer to {tag:?}");
    }

    fn write(&mut self, request: &ClientRequest) -> Result<Answer, ClientError> {
        match self.ask(ToNode::Data(request.clone())) {
            FromNode::Data(response) => response.result.map(|(answer, _)| answer),
            other => panic!("a data request gets a data answer: {other:?}"),
        }
    }
}

/// Through the node core: a cas whose answer was lost, resent after later writes of its
/// client, answers its first result (re-applied, it would fail); once the session idled past
/// the timeout by the leader's clock, the resend is refused as expired, and not applied.
#[test]
fn a_resent_write_applies_once_and_never_after_its_session_expired() {
    let mut node = OneNode::serving_strong("st");
    let request =
        |seq: u64, operation: Operation| ClientRequest::new(ClientId(42), seq, "st", operation);
    let cas = request(
        1,
        Operation::Cas {
            key: Bytes::from_static(b"k"),
            expected: None,
            value: Some(Bytes::from_static(b"first")),
        },
    );
    let first = node.write(&cas).expect("the cas applies");
    assert!(
        matches!(
            first,
            Answer::Cas {
                succeeded: true,
                ..
            }
        ),
        "{first:?}"
    );
    for seq in [3, 2] {
        let put = Operation::Put {
            key: Bytes::from(format!("other{seq}")),
            value: Bytes::from_static(b"v"),
            context: None,
        };
        assert!(node.write(&request(seq, put)).is_ok());
    }
    assert_eq!(
        node.write(&cas),
        Ok(first),
        "the first answer, not a second apply"
    );

    // Two hours later by the wall clock another client writes: the log clock passes the
    // session's timeout, and the session is forgotten.
    node.wall.0 += 2 * 3_600_000;
    let other = ClientRequest {
        client: ClientId(43),
        ..request(
            1,
            Operation::Delete {
                key: Bytes::from_static(b"x"),
                context: None,
            },
        )
    };
    assert!(node.write(&other).is_ok());
    let late = ClientRequest {
        opens_session: false,
        ..cas.clone()
    };
    assert_eq!(
        node.write(&late),
        Err(ClientError::SessionExpired { seq: 1 })
    );
}

/// Sends an admin request and returns its answer.
fn admin(
    node: &mut OneNode,
    request: AdminRequest,
) -> Result<crate::protocol::admin::AdminAnswer, crate::protocol::admin::AdminError> {
    match node.ask(ToNode::Admin(request)) {
        FromNode::Admin(result) => result,
        other => panic!("an admin request gets an admin answer: {other:?}"),
    }
}

fn put(node: &mut OneNode, seq: u64, key: &str, value: &str) -> LogIndex {
    let operation = Operation::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        context: None,
    };
    let request = ClientRequest::new(ClientId(42), seq, "st", operation);
    match node.write(&request) {
        Ok(Answer::Written { revision }) => revision,
        other => panic!("a put: {other:?}"),
    }
}

/// Through the node core: a backup opened at a revision pages out exactly the keys as of
/// that revision while writes go on; the pages restore into a fresh node, whose keyspace is
/// held until its last chunk and then serves every key with its revisions, at the backed-up
/// revision. Bad input is answered with typed errors: a handle never opened, a chunk that
/// is not an image or of another revision or out of order, a chunk for a keyspace not being
/// restored, and a restore into a node holding another keyspace.
#[test]
fn a_backup_pages_one_revision_and_restores_it_into_a_fresh_node() {
    use crate::protocol::admin::{AdminAnswer, AdminError};
    use crate::strong::store::ImageChunk;
    let mut source = OneNode::serving_strong("st");
    for i in 0..40 {
        put(&mut source, i + 1, &format!("k{i:02}"), &format!("v{i}"));
    }
    let opened = admin(
        &mut source,
        AdminRequest::BackupOpen {
            keyspace: "st".into(),
        },
    );
    let Ok(AdminAnswer::BackupOpened(opened)) = opened else {
        panic!("{opened:?}");
    };
    let revision = opened.revision.expect("a strong keyspace's revision");
    put(&mut source, 100, "k00", "after the backup opened");
    put(&mut source, 101, "late", "after the backup opened");
    let (mut chunks, mut cursor) = (Vec::new(), Bytes::new());
    loop {
        let read = AdminRequest::BackupRead {
            backup: opened.backup,
            cursor: cursor.clone(),
        };
        let Ok(AdminAnswer::BackupChunk { data, next }) = admin(&mut source, read) else {
            panic!("a page");
        };
        chunks.push(data);
        match next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    let rows: BTreeMap<Bytes, crate::strong::Versioned> = chunks
        .iter()
        .flat_map(|data| {
            let chunk: ImageChunk = crate::wire::unframed::decode(data).expect("an image chunk");
            assert_eq!(chunk.applied, revision);
            chunk.rows
        })
        .collect();
    assert_eq!(
        rows.len(),
        40,
        "the keys as of the revision, not the later ones"
    );
    assert_eq!(rows[&Bytes::from_static(b"k00")].value, "v0");
    let unknown = AdminRequest::BackupRead {
        backup: opened.backup ^ 1,
        cursor: Bytes::new(),
    };
    assert!(matches!(
        admin(&mut source, unknown),
        Err(AdminError::UnknownBackup { .. })
    ));

    let mut target = OneNode::fresh();
    let restore = |restore| AdminRequest::RestoreKeyspace {
        name: "st".into(),
        mode: crate::protocol::KeyspaceMode::Strong,
        revision: Some(revision),
        restore,
    };
    assert_eq!(admin(&mut target, restore(5)), Ok(AdminAnswer::Done));
    let chunk = |seq: u64, data: &Bytes, last| AdminRequest::RestoreChunk {
        name: "st".into(),
        seq,
        data: data.clone(),
        last,
    };
    let garbage = Bytes::from_static(b"not an image chunk");
    let refused = admin(&mut target, chunk(0, &garbage, false));
    assert!(
        matches!(refused, Err(AdminError::BadRestoreChunk { .. })),
        "{refused:?}"
    );
    let other = ImageChunk {
        applied: LogIndex(revision.0 + 1),
        ..ImageChunk::default()
    };
    let other = Bytes::from(crate::wire::unframed::encode(&other).unwrap());
    let refused = admin(&mut target, chunk(0, &other, false));
    assert!(
        matches!(refused, Err(AdminError::BadRestoreChunk { .. })),
        "{refused:?}"
    );
    let skipped = admin(&mut target, chunk(3, &chunks[0], false));
    assert!(matches!(
        skipped,
        Err(AdminError::RestoreOutOfOrder { expected: 0, .. })
    ));
    // Held: not served until its image is in.
    let get = ClientRequest::new(
        ClientId(7),
        1,
        "st",
        Operation::Get {
            key: Bytes::from_static(b"k00"),
        },
    );
    assert!(matches!(
        node_get(&mut target, &get),
        Err(ClientError::UnknownKeyspace { .. })
    ));
    for (seq, data) in chunks.iter().enumerate() {
        let last = seq + 1 == chunks.len();
        assert_eq!(
            admin(&mut target, chunk(seq as u64, data, last)),
            Ok(AdminAnswer::Done)
        );
    }
    let not_restoring = admin(&mut target, chunk(0, &chunks[0], true));
    assert!(matches!(
        not_restoring,
        Err(AdminError::NotRestoring { .. })
    ));
    target.run_for(Duration::from_secs(2));
    for (key, version) in &rows {
        let get = ClientRequest::new(ClientId(7), 1, "st", Operation::Get { key: key.clone() });
        assert_eq!(
            node_get(&mut target, &get),
            Ok(Some(version.clone())),
            "{key:?}"
        );
    }
    let status = target.core.status();
    let group = status
        .strong
        .iter()
        .find(|g| g.keyspace == "st")
        .expect("runs st");
    assert_eq!(group.snapshot_index, revision);
    assert!(
        group.applied > revision,
        "its leader's first entry follows the snapshot"
    );
    let another = AdminRequest::RestoreKeyspace {
        name: "more".into(),
        mode: crate::protocol::KeyspaceMode::Strong,
        revision: Some(revision),
        restore: 6,
    };
    let refused = admin(&mut target, another);
    assert!(
        matches!(refused, Err(AdminError::ClusterNotEmpty { .. })),
        "{refused:?}"
    );
}

fn node_get(
    node: &mut OneNode,
    request: &ClientRequest,
) -> Result<Option<crate::strong::Versioned>, ClientError> {
    match node.ask(ToNode::Data(request.clone())) {
        FromNode::Data(response) => match response.result? {
            (Answer::Strong(value), _) => Ok(value),
            (other, _) => panic!("a strong get: {other:?}"),
        },
        other => panic!("{other:?}"),
    }
}
