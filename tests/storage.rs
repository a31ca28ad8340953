//! The redb store keeps exactly what the Ready contract says to keep: entries with their
//! conflicting suffix truncated, hard state, snapshots replacing the log or (compaction) its
//! prefix, CRDT states, and refuses another node's file. Checked on the real file format, in
//! memory and on disk across a reopen.

use bytes::Bytes;
use capdial::eventual::hash::key_hash;
use capdial::eventual::{
    DurableMeta, HlcTimestamp, KeyState, MemoryStates, Op, PersistBatch, PersistId, StoredImage,
    StoredKey, ValueType, WriteStamp,
};
use capdial::raft::{Entry, EntryKind, HardState, Membership, ProposalId, Ready, SnapshotMeta};
use capdial::storage::machine::GC_ROWS_PER_COMMIT;
use capdial::storage::{Batch, Checkpoints, StorageError, Store, wal_path};
use capdial::strong::store::{ImageChunk, StagedChunk, row_bytes};
use capdial::strong::{MachineStore, MachineWrites, Versioned};
use capdial::types::{GroupId, KeyspaceId, LogIndex, NodeId, Term, WallMillis};

const GROUP: GroupId = GroupId(7);

fn entry(term: u64, index: u64, command: &str) -> Entry {
    let kind = EntryKind::Normal {
        proposal: ProposalId(index),
        command: Bytes::copy_from_slice(command.as_bytes()),
    };
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind,
    }
}

fn ready(entries: Vec<Entry>, hard_state: Option<HardState>) -> Ready {
    Ready {
        entries,
        hard_state,
        must_sync: true,
        ..Ready::default()
    }
}

fn snapshot(index: u64, term: u64) -> SnapshotMeta {
    let membership = Membership {
        voters: [NodeId(1)].into(),
        learners: Default::default(),
    };
    SnapshotMeta {
        index: LogIndex(index),
        term: Term(term),
        membership,
    }
}

fn commit(store: &Store, group: GroupId, ready: &Ready) {
    let mut batch = Batch::new();
    batch.raft_ready(group, ready);
    store.commit(batch).unwrap();
}

fn indexes_and_terms(store: &Store, group: GroupId) -> Vec<(u64, u64)> {
    let restored = store.raft_restore(group).unwrap();
    restored
        .entries
        .iter()
        .map(|e| (e.index.0, e.term.0))
        .collect()
}

#[test]
fn appends_truncate_the_conflicting_suffix_and_keep_hard_state() {
    let store = Store::in_memory(NodeId(1)).unwrap();
    let hard = HardState {
        term: Term(2),
        vote: Some(NodeId(1)),
        commit: LogIndex(1),
    };
    let first = vec![entry(1, 1, "a"), entry(1, 2, "b"), entry(1, 3, "c")];
    commit(&store, GROUP, &ready(first, Some(hard)));
    commit(&store, GROUP, &ready(vec![entry(2, 2, "x")], None));
    assert_eq!(indexes_and_terms(&store, GROUP), vec![(1, 1), (2, 2)]);
    let restored = store.raft_restore(GROUP).unwrap();
    assert_eq!(restored.hard_state, hard);
    assert_eq!(restored.entries[1], entry(2, 2, "x"));
    // Another group in the same file is untouched.
    assert!(store.raft_restore(GroupId(8)).unwrap().entries.is_empty());
}

#[test]
fn snapshots_replace_the_log_and_compaction_keeps_the_tail() {
    let store = Store::in_memory(NodeId(1)).unwrap();
    let entries = (1..=6).map(|i| entry(1, i, "v")).collect();
    commit(&store, GROUP, &ready(entries, None));
    let mut batch = Batch::new();
    batch.raft_compaction(GROUP, snapshot(4, 1));
    store.commit(batch).unwrap();
    let restored = store.raft_restore(GROUP).unwrap();
    assert_eq!(
        restored.snapshot.as_ref().map(|meta| meta.index),
        Some(LogIndex(4))
    );
    assert_eq!(restored.applied, LogIndex(4));
    assert_eq!(indexes_and_terms(&store, GROUP), vec![(5, 1), (6, 1)]);
    // A snapshot from the leader replaces the whole log.
    let installed = Ready {
        snapshot: Some(snapshot(9, 3)),
        must_sync: true,
        ..Ready::default()
    };
    commit(&store, GROUP, &installed);
    assert!(store.raft_restore(GROUP).unwrap().entries.is_empty());
}

/// An `lww` row for `key`: `Some(value)` a live one, `None` a tombstone.
fn lww_row(key: &str, value: Option<&str>, seq: u64) -> (Bytes, Option<StoredKey>) {
    let mut state = KeyState::new(ValueType::Lww);
    let stamp = WriteStamp {
        node: NodeId(1),
        seq,
        hlc: HlcTimestamp {
            physical_ms: 1_000 + seq,
            logical: 0,
            node: NodeId(1),
        },
    };
    let op = match value {
        Some(value) => Op::LwwPut(Bytes::copy_from_slice(value.as_bytes())),
        None => Op::LwwDelete,
    };
    state.apply_local(op, stamp).unwrap();
    let key = Bytes::copy_from_slice(key.as_bytes());
    let row = StoredKey::new(key_hash(&key), state);
    (key, Some(row))
}

fn persist_batch(id: u64, seq: u64, keys: Vec<(Bytes, Option<StoredKey>)>) -> PersistBatch {
    let meta = DurableMeta {
        seq,
        hlc: HlcTimestamp::zero(NodeId(1)),
        knowledge: Default::default(),
    };
    PersistBatch {
        id: PersistId(id),
        keys,
        meta,
    }
}

fn commit_eventual(store: &Store, keyspace: KeyspaceId, batch: &PersistBatch) {
    let mut writes = Batch::new();
    writes.eventual_persist(keyspace, batch.clone());
    assert!(
        writes.needs_sync(),
        "eventual writes are acknowledged after this commit"
    );
    store.commit(writes).unwrap();
}

/// Everything a `StateStore` answers about `keyspace`.
fn answers(
    store: &dyn capdial::eventual::StateStore,
    keyspace: KeyspaceId,
) -> impl std::fmt::Debug + PartialEq {
    let image = store.load(keyspace).unwrap();
    let rows = store.range(keyspace, (0, &[]), None, usize::MAX).unwrap();
    let gets: Vec<_> = rows
        .iter()
        .map(|(key, _)| store.get(keyspace, key).unwrap())
        .collect();
    let first_leaf = rows.first().map(|(key, _)| key_hash(key));
    let one_leaf = first_leaf.map(|hash| store.range(keyspace, (hash, &[]), Some(hash + 1), 10));
    let tombstones = store.tombstones_after(keyspace, None, usize::MAX).unwrap();
    let after_first = tombstones
        .first()
        .map(|first| store.tombstones_after(keyspace, Some(first), 1).unwrap());
    (
        image,
        rows,
        gets,
        one_leaf.map(Result::unwrap),
        tombstones,
        after_first,
    )
}

/// The redb store answers exactly as the in-memory reference does, batch after batch (rows,
/// the leaves and summary a commit folds them into, the tombstone index), across a reopen,
/// and per keyspace; a dropped keyspace leaves nothing.
#[test]
fn eventual_rows_match_the_reference_store_across_a_reopen_and_a_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let reference = MemoryStates::new();
    let (ours, other) = (KeyspaceId(4), KeyspaceId(5));
    let batches = [
        persist_batch(
            1,
            3,
            vec![lww_row("a", Some("1"), 1), lww_row("b", Some("2"), 2)],
        ),
        persist_batch(
            2,
            5,
            vec![lww_row("a", None, 4), lww_row("c", Some("3"), 5)],
        ),
        persist_batch(
            3,
            6,
            vec![(Bytes::from_static(b"a"), None), lww_row("d", None, 6)],
        ),
    ];
    {
        let store = Store::open(&path, NodeId(1), 1 << 20).unwrap();
        for batch in &batches {
            commit_eventual(&store, ours, batch);
            reference.commit(ours, batch);
            assert_eq!(answers(&store, ours), answers(&reference, ours));
        }
        let kept = persist_batch(1, 1, vec![lww_row("z", Some("9"), 1)]);
        commit_eventual(&store, other, &kept);
        reference.commit(other, &kept);
    }
    let store = Store::open(&path, NodeId(1), 1 << 20).unwrap();
    assert_eq!(answers(&store, ours), answers(&reference, ours));
    let image = capdial::eventual::StateStore::load(&store, ours).unwrap();
    assert_eq!(image.meta.unwrap().seq, 6);
    assert_eq!(
        (image.summary.keys, image.summary.live_keys),
        (3, 2),
        "b, c and d's tombstone"
    );
    assert_eq!(
        capdial::eventual::StateStore::tombstones_after(&store, ours, None, 10).unwrap(),
        vec![Bytes::from_static(b"d")]
    );

    let mut writes = Batch::new();
    writes.drop_keyspace(ours);
    writes.raft_ready(GroupId(5), &ready(vec![entry(1, 1, "x")], None));
    store.commit(writes).unwrap();
    reference.remove(ours);
    assert_eq!(answers(&store, ours), answers(&reference, ours));
    assert_eq!(
        capdial::eventual::StateStore::load(&store, ours).unwrap(),
        StoredImage::default()
    );
    assert_eq!(
        answers(&store, other),
        answers(&reference, other),
        "another keyspace keeps its rows"
    );
    assert_eq!(
        store.stored_ids().unwrap().into_iter().collect::<Vec<_>>(),
        vec![5],
        "the dropped keyspace has no row left, the other one has"
    );
    drop(store);
    let wrong = Store::open(&path, NodeId(3), 1 << 20);
    assert!(matches!(
        wrong,
        Err(StorageError::WrongNode {
            expected: NodeId(3),
            found: NodeId(1)
        })
    ));
}

/// A dropped eventual keyspace leaves every reader at once; its rows go over commits of at
/// most `GC_ROWS_PER_COMMIT`, so no commit grows with the keyspace.
#[test]
fn a_dropped_eventual_keyspace_is_collected_in_bounded_steps() {
    let store = Store::in_memory(NodeId(1)).unwrap();
    let keyspace = KeyspaceId(9);
    let total = GC_ROWS_PER_COMMIT as u64 + 10;
    let rows = (0..total)
        .map(|i| lww_row(&format!("k{i:06}"), Some("v"), i + 1))
        .collect();
    commit_eventual(&store, keyspace, &persist_batch(1, total, rows));
    let held = store.eventual_row_count().unwrap();
    assert!(held > total, "the rows and their leaves");
    let mut writes = Batch::new();
    writes.drop_keyspace(keyspace);
    store.commit(writes).unwrap();
    assert_eq!(
        capdial::eventual::StateStore::load(&store, keyspace).unwrap(),
        StoredImage::default()
    );
    assert!(!store.stored_ids().unwrap().contains(&keyspace.0));
    let left = store.eventual_row_count().unwrap();
    assert_eq!(
        left,
        held - GC_ROWS_PER_COMMIT as u64,
        "one commit collects at most its share"
    );
    let mut commits = 0;
    while store.eventual_row_count().unwrap() > 0 {
        let mut batch = Batch::new();
        batch.raft_ready(GroupId(3), &ready(Vec::new(), Some(HardState::default())));
        store.commit(batch).unwrap();
        commits += 1;
        assert!(commits <= 10, "collection ends");
    }
}

/// `stored_ids` finds a group with nothing but entries, a keyspace with nothing but key
/// states, and ids far apart (it seeks from id to id).
#[test]
fn stored_ids_name_every_id_with_a_row_of_any_kind() {
    let store = Store::in_memory(NodeId(1)).unwrap();
    assert!(store.stored_ids().unwrap().is_empty());
    let mut batch = Batch::new();
    batch.raft_ready(GroupId(3), &ready(vec![entry(1, 1, "x")], None));
    batch.raft_ready(
        GroupId(900),
        &ready(vec![entry(1, 1, "y"), entry(1, 2, "z")], None),
    );
    batch.eventual_persist(
        KeyspaceId(7),
        persist_batch(1, 1, vec![lww_row("k", Some("v"), 1)]),
    );
    let hard_state = HardState {
        term: Term(2),
        vote: None,
        commit: LogIndex(0),
    };
    batch.raft_ready(GroupId(0), &ready(Vec::new(), Some(hard_state)));
    store.commit(batch).unwrap();
    let ids: Vec<u64> = store.stored_ids().unwrap().into_iter().collect();
    assert_eq!(ids, vec![0, 3, 7, 900]);
}

fn version(value: &str, revision: u64) -> Versioned {
    Versioned {
        value: Bytes::copy_from_slice(value.as_bytes()),
        create_revision: LogIndex(revision),
        mod_revision: LogIndex(revision),
    }
}

fn rows(writes: Vec<(&str, Option<Versioned>)>, applied: u64) -> MachineWrites {
    MachineWrites {
        rows: writes
            .into_iter()
            .map(|(key, row)| (Bytes::copy_from_slice(key.as_bytes()), row))
            .collect(),
        applied: Some(LogIndex(applied)),
        ..MachineWrites::default()
    }
}

fn commit_machine(store: &Store, group: GroupId, writes: MachineWrites) {
    let mut batch = Batch::new();
    batch.machine_writes(group, writes);
    store.commit(batch).unwrap();
}

/// A strong machine's rows: written and deleted, read back by key and prefix, and replaced by
/// a snapshot staged over several commits, whose install is one small write; the replaced
/// rows go a bounded number per later commit.
#[test]
fn machine_rows_are_replaced_by_a_staged_snapshot_and_collected_in_bounded_steps() {
    let store = Store::in_memory(NodeId(1)).unwrap();
    commit_machine(
        &store,
        GROUP,
        rows(
            vec![("a", Some(version("1", 1))), ("b", Some(version("2", 2)))],
            2,
        ),
    );
    commit_machine(&store, GROUP, rows(vec![("a", None)], 3));
    assert_eq!(store.get(GROUP, b"a").unwrap(), None);
    assert_eq!(store.get(GROUP, b"b").unwrap(), Some(version("2", 2)));
    assert_eq!(store.load(GROUP).unwrap().applied, LogIndex(3));
    assert_eq!(store.load(GroupId(8)).unwrap().applied, LogIndex(0));
    // A snapshot of more rows than one commit collects, staged in three chunks.
    let total = GC_ROWS_PER_COMMIT + 10;
    let keys: Vec<String> = (0..total).map(|i| format!("s{i:06}")).collect();
    for (n, part) in keys.chunks(total / 3 + 1).enumerate() {
        let chunk = ImageChunk {
            applied: LogIndex(50),
            clock: WallMillis(77),
            sessions: Vec::new(),
            rows: part
                .iter()
                .map(|key| (Bytes::copy_from_slice(key.as_bytes()), version("v", 40)))
                .collect(),
        };
        let staged = StagedChunk {
            restart: n == 0,
            chunk,
        };
        let writes = MachineWrites {
            staged: vec![staged],
            ..MachineWrites::default()
        };
        commit_machine(&store, GROUP, writes);
        assert_eq!(
            store.get(GROUP, b"b").unwrap(),
            Some(version("2", 2)),
            "not yet"
        );
    }
    let install = MachineWrites {
        install: true,
        ..MachineWrites::default()
    };
    commit_machine(&store, GROUP, install);
    assert_eq!(
        store.get(GROUP, b"b").unwrap(),
        None,
        "the old rows are gone from view"
    );
    assert_eq!(store.load(GROUP).unwrap().applied, LogIndex(50));
    assert_eq!(
        store.load(GROUP).unwrap().clock,
        WallMillis(77),
        "the log clock comes with the image"
    );
    let scanned = store
        .scan(GROUP, b"s", b"s", total + 5, usize::MAX)
        .unwrap();
    assert_eq!(scanned.len(), total);
    // A byte budget stops a scan after the row that reaches it, and never before the first.
    let two: usize = scanned[..2].iter().map(|(k, v)| row_bytes(k, v)).sum();
    assert_eq!(store.scan(GROUP, b"s", b"s", total, 1).unwrap().len(), 1);
    assert_eq!(store.scan(GROUP, b"s", b"s", total, two).unwrap().len(), 2);
    // The image streams every row back, in chunks.
    let image = store.image(GROUP).unwrap();
    assert_eq!(image.index(), LogIndex(50));
    let (mut cursor, mut streamed) = (Bytes::new(), 0);
    loop {
        let (data, next) = image.chunk(&cursor, 64 * 1024).unwrap();
        assert!(data.len() <= 64 * 1024 + 1024);
        let chunk: ImageChunk = capdial::wire::unframed::decode(&data).unwrap();
        streamed += chunk.rows.len();
        match next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(streamed, total);
    // Dropping the keyspace: every row goes, over commits of at most GC_ROWS_PER_COMMIT.
    let mut batch = Batch::new();
    batch.drop_keyspace(KeyspaceId(GROUP.0));
    store.commit(batch).unwrap();
    assert_eq!(store.get(GROUP, b"s000000").unwrap(), None);
    assert!(!store.stored_ids().unwrap().contains(&GROUP.0));
    assert!(
        store.machine_row_count().unwrap() > 0,
        "more than one commit collects"
    );
    for _ in 0..3 {
        let mut batch = Batch::new();
        batch.raft_ready(GroupId(9), &ready(Vec::new(), Some(HardState::default())));
        store.commit(batch).unwrap();
    }
    assert!(
        store
            .scan(GROUP, b"", b"", 10, usize::MAX)
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.machine_row_count().unwrap(), 0);
}

/// The files of a store as a crash would leave them (the redb file holds its last
/// checkpoint; the log, what was appended since), copied while the store is open.
fn crash_copy(path: &std::path::Path, to: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(to).unwrap();
    let copy = to.join("node.redb");
    std::fs::copy(path, &copy).unwrap();
    std::fs::copy(wal_path(path), wal_path(&copy)).unwrap();
    copy
}

/// Commits go to the write-ahead log and to redb in memory; a store reopened from the files
/// a crash leaves (no clean close) holds every committed batch: those of its last
/// checkpoint from redb, the later ones from the log. A torn last record loses only itself.
#[test]
fn a_crash_between_checkpoints_loses_no_committed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    // A checkpoint at every commit once the log holds anything: batch 2 is a checkpoint.
    let checkpoints = Checkpoints {
        interval: std::time::Duration::MAX,
        log_bytes: 1,
    };
    let store = Store::open_with(&path, NodeId(1), 1 << 20, checkpoints).unwrap();
    let hard = HardState {
        term: Term(1),
        ..HardState::default()
    };
    commit(&store, GROUP, &ready(vec![entry(1, 1, "a")], Some(hard)));
    commit(&store, GROUP, &ready(vec![entry(1, 2, "b")], None));
    let eventual = persist_batch(1, 2, vec![lww_row("k", Some("v"), 2)]);
    let mut batch = Batch::new();
    batch.raft_ready(GROUP, &ready(vec![entry(1, 3, "c")], None));
    batch.eventual_persist(KeyspaceId(4), eventual.clone());
    store.commit(batch).unwrap();
    let crashed = crash_copy(&path, &dir.path().join("crash"));
    let reference = MemoryStates::new();
    reference.commit(KeyspaceId(4), &eventual);

    let reopened = Store::open(&crashed, NodeId(1), 1 << 20).unwrap();
    assert_eq!(
        indexes_and_terms(&reopened, GROUP),
        [(1, 1), (2, 1), (3, 1)]
    );
    assert_eq!(reopened.raft_restore(GROUP).unwrap().hard_state, hard);
    assert_eq!(
        answers(&reopened, KeyspaceId(4)),
        answers(&reference, KeyspaceId(4))
    );
    // Reopened, the log was applied, made durable and emptied: a second crash right away
    // loses nothing either.
    let twice = crash_copy(&crashed, &dir.path().join("crash-twice"));
    drop(reopened);
    let again = Store::open(&twice, NodeId(1), 1 << 20).unwrap();
    assert_eq!(indexes_and_terms(&again, GROUP), [(1, 1), (2, 1), (3, 1)]);

    // The last record torn by the crash: the batches before it survive, and new commits
    // follow them.
    let logged = dir.path().join("logged.redb");
    let never = Checkpoints {
        interval: std::time::Duration::MAX,
        log_bytes: u64::MAX,
    };
    let store = Store::open_with(&logged, NodeId(1), 1 << 20, never).unwrap();
    commit(&store, GROUP, &ready(vec![entry(1, 1, "a")], None));
    commit(&store, GROUP, &ready(vec![entry(1, 2, "b")], None));
    let torn = crash_copy(&logged, &dir.path().join("torn"));
    // The log is preallocated with zeros: the last record ends at the last byte that is not
    // (its batch's `sync` flag); three of its bytes never reached the disk.
    let log = wal_path(&torn);
    let mut bytes = std::fs::read(&log).unwrap();
    let end = bytes.iter().rposition(|byte| *byte != 0).unwrap() + 1;
    bytes[end - 3..end].fill(0);
    std::fs::write(&log, &bytes).unwrap();
    let reopened = Store::open(&torn, NodeId(1), 1 << 20).unwrap();
    assert_eq!(indexes_and_terms(&reopened, GROUP), [(1, 1)]);
    commit(&reopened, GROUP, &ready(vec![entry(2, 2, "c")], None));
    drop(reopened);
    let last = Store::open(&torn, NodeId(1), 1 << 20).unwrap();
    assert_eq!(indexes_and_terms(&last, GROUP), [(1, 1), (2, 2)]);
}
