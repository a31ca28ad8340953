//! Storage benchmarks: what one commit of the node's driver costs on a real file.
//!
//! - `commit/entry+fsync`: a Raft entry of 256 bytes and the hard state, fsynced through the
//!   write-ahead log and applied to redb (a leader's or follower's append).
//! - `commit/hard_state`: the hard state alone, not fsynced (a commit index that moved):
//!   the log write and the redb apply without the disk flush, i.e. the commit's CPU cost.
//!
//! Run: `cargo bench --bench storage -- --quick`. The file lives in the system's temporary
//! directory, so the fsync figure is that disk's.

use bytes::Bytes;
use capdial::raft::{Entry, EntryKind, HardState, ProposalId, Ready};
use capdial::storage::{Batch, Store};
use capdial::types::{GroupId, LogIndex, NodeId, Term};
use criterion::Criterion;
use std::time::Duration;

const GROUP: GroupId = GroupId(7);

/// A `Ready` persisting entry `index` (if `entry`) and the hard state committing it.
fn ready(index: u64, entry: bool) -> Ready {
    let hard_state = HardState {
        term: Term(1),
        vote: Some(NodeId(1)),
        commit: LogIndex(index),
    };
    let entries = entry
        .then(|| Entry {
            term: Term(1),
            index: LogIndex(index),
            kind: EntryKind::Normal {
                proposal: ProposalId(index),
                command: Bytes::from(vec![7u8; 256]),
            },
        })
        .into_iter()
        .collect();
    Ready {
        hard_state: Some(hard_state),
        entries,
        must_sync: entry,
        ..Ready::default()
    }
}

fn bench_commit(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(&dir.path().join("bench.redb"), NodeId(1), 64 << 20).expect("open");
    let mut index = 0;
    let mut group = criterion.benchmark_group("commit");
    group.bench_function("entry+fsync", |b| {
        b.iter(|| {
            index += 1;
            let mut batch = Batch::new();
            batch.raft_ready(GROUP, &ready(index, true));
            store.commit(batch).expect("commit");
        })
    });
    group.bench_function("hard_state", |b| {
        b.iter(|| {
            let mut batch = Batch::new();
            batch.raft_ready(GROUP, &ready(index, false));
            store.commit(batch).expect("commit");
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_commit(&mut criterion);
    criterion.final_summary();
}
