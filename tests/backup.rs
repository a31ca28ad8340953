//! `capdial backup` and `capdial restore` against real 3-node clusters: a backup taken while
//! a strong keyspace is written restores, into a fresh cluster, every keyspace with its data
//! and every strong key's revisions, at one revision of the source; a flipped byte or a cut
//! file is refused and leaves the target empty; a cluster that holds keyspaces refuses a
//! restore.

mod common;

use bytes::Bytes;
use capdial::LocalCluster;
use capdial::eventual::ValueType;
use capdial::protocol::KeyspaceMode;
use capdial::strong::Versioned;
use capdial::types::LogIndex;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const SET: KeyspaceMode = KeyspaceMode::Eventual(ValueType::Set);
const COUNTER: KeyspaceMode = KeyspaceMode::Eventual(ValueType::Counter);
const LWW: KeyspaceMode = KeyspaceMode::Eventual(ValueType::Lww);
const MVREG: KeyspaceMode = KeyspaceMode::Eventual(ValueType::MvReg);

/// How long a restored keyspace may take to elect a leader and serve.
const SERVE_DEADLINE: Duration = Duration::from_secs(30);
/// Strong keys written before the backup: with 2 KiB values, several backup pages.
const STRONG_KEYS: usize = 300;
/// `lww` keys of 2 KiB: several pages too.
const EVENTUAL_KEYS: usize = 300;

/// Runs the CLI against `cluster` and returns its output, whatever its exit status.
fn cli(cluster: &LocalCluster, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capdial"))
        .args(args)
        .args(["--endpoint", &cluster.endpoints().join(",")])
        .arg("--certs")
        .arg(cluster.certs())
        .output()
        .expect("capdial runs")
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// The revision `capdial backup` printed for `keyspace` (`NAME (MODE): N keys at revision R`).
fn printed_revision(output: &str, keyspace: &str) -> LogIndex {
    let line = output
        .lines()
        .find(|line| line.starts_with(&format!("{keyspace} (")))
        .unwrap_or_else(|| panic!("no line for {keyspace} in {output}"));
    let revision = line.rsplit(' ').next().expect("a last word");
    LogIndex(revision.parse().unwrap_or_else(|_| panic!("{line}")))
}

/// Fills the source: strong keys (overwritten and deleted ones among them), and every CRDT
/// type written on all replicas. Returns the strong keys as they are now.
async fn fill(cluster: &LocalCluster) -> BTreeMap<Bytes, Versioned> {
    for (name, mode) in [
        ("orders", KeyspaceMode::Strong),
        ("carts", SET),
        ("views", COUNTER),
        ("profiles", LWW),
        ("docs", MVREG),
    ] {
        cluster.create_keyspace(name, mode).await.expect("create");
    }
    let db = cluster.client();
    let orders = db.strong("orders");
    for i in 0..STRONG_KEYS {
        let value = format!("{i:04}-{}", "x".repeat(2048));
        orders.put(format!("o-{i:04}"), value).await.expect("put");
    }
    for i in (0..STRONG_KEYS).step_by(7) {
        orders.put(format!("o-{i:04}"), "again").await.expect("put");
    }
    for i in (3..STRONG_KEYS).step_by(11) {
        orders.delete(format!("o-{i:04}")).await.expect("delete");
    }
    let carts = db.set("carts");
    carts
        .add("alice", ["book", "pen", "tea"])
        .all()
        .await
        .expect("sadd");
    carts.remove("alice", ["pen"]).all().await.expect("srem");
    carts.add("bob", ["lamp"]).all().await.expect("sadd");
    let views = db.counter("views");
    views.incr("home", 40).all().await.expect("incr");
    views.decr("home", 2).all().await.expect("decr");
    let profiles = db.lww("profiles");
    profiles.put("alice", "v1").all().await.expect("put");
    profiles.put("alice", "v2").all().await.expect("put");
    // Enough for several backup pages of an eventual keyspace.
    for i in 0..EVENTUAL_KEYS {
        let value = format!("{i}-{}", "p".repeat(2048));
        profiles
            .put(format!("p-{i:04}"), value)
            .all()
            .await
            .expect("put");
    }
    profiles.put("gone", "x").all().await.expect("put");
    profiles.delete("gone").all().await.expect("delete");
    let docs = db.mvreg("docs");
    docs.put("readme", "hello").all().await.expect("put");
    let mut keys = BTreeMap::new();
    let scan = orders.scan("o-").await.expect("scan");
    for (key, version) in scan.entries {
        keys.insert(key, version);
    }
    assert!(keys.len() > STRONG_KEYS / 2);
    keys
}

#[test]
fn a_backup_taken_under_writes_restores_every_keyspace_and_strong_revisions() {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("cluster.capdial");
    let source = runtime.block_on(common::local_cluster());
    let before = runtime.block_on(fill(&source));

    // Writes go on while the backup runs: the backup holds exactly those at or below its
    // revision.
    let writer = {
        let orders = source.client().strong("orders");
        runtime.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..2000 {
                match orders.put(format!("w-{i:05}"), "during").await {
                    Ok(written) => acked.push((format!("w-{i:05}"), written.revision)),
                    Err(error) => panic!("write during the backup: {error}"),
                }
            }
            acked
        })
    };
    let output = cli(&source, &["backup", "--out", path_arg(&file)]);
    assert!(output.status.success(), "backup: {output:?}");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let revision = printed_revision(&printed, "orders");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("backup orders:"),
        "progress lines: {stderr}"
    );
    let profiles = printed
        .lines()
        .find(|line| line.starts_with("profiles ("))
        .expect("a line for profiles");
    // Its keys and the deleted one's tombstone, over several pages.
    assert!(
        profiles.contains(&format!("{} keys", EVENTUAL_KEYS + 2)),
        "{profiles}"
    );
    let during = runtime.block_on(writer).expect("writer");

    let target = runtime.block_on(common::local_cluster());
    let restored = common::capdial_cli(&target, ["restore", "--from", path_arg(&file)]);
    assert!(restored.contains("restored 5 keyspaces"), "{restored}");

    runtime.block_on(async {
        let db = target.client();
        let orders = db.strong("orders");
        // The group elects a leader after its snapshot is installed on every node.
        let scan = common::poll_until(SERVE_DEADLINE, "restored orders to serve", async || {
            orders.scan("").await.ok()
        })
        .await;
        let got: BTreeMap<Bytes, Versioned> = scan.entries.into_iter().collect();
        for (key, version) in &before {
            assert_eq!(got.get(key), Some(version), "{key:?}");
        }
        for (key, at) in &during {
            let key = Bytes::from(key.clone());
            let found = got.get(&key);
            if *at <= revision {
                let found = found.unwrap_or_else(|| panic!("{key:?} at {at:?} is lost"));
                assert_eq!(found.mod_revision, *at);
            } else {
                assert!(found.is_none(), "{key:?} at {at:?} is past {revision:?}");
            }
        }
        assert_eq!(
            got.len(),
            before.len() + during.iter().filter(|(_, at)| *at <= revision).count()
        );
        for node in target.nodes() {
            let status = target.status(node.id).await.expect("status");
            let group = status
                .strong
                .iter()
                .find(|group| group.keyspace == "orders");
            let group = group.expect("every node runs orders");
            assert!(group.snapshot_index >= revision, "{group:?}");
            assert!(group.applied >= revision, "{group:?}");
        }
        let next = orders.put("after", "restore").await.expect("put");
        assert!(
            next.revision > revision,
            "revisions go on from the backup's"
        );

        // A node restarts from what the restore made durable: the installed snapshot.
        let restarted = target.nodes()[2].id;
        target.kill(restarted).expect("kill");
        target.restart(restarted).await.expect("restart");
        let endpoint = target.endpoint(restarted).expect("address").to_string();
        common::poll_until(
            SERVE_DEADLINE,
            "the restarted node to catch up",
            async || {
                let status = target.status(restarted).await.ok()?;
                let group = status
                    .strong
                    .iter()
                    .find(|group| group.keyspace == "orders")?;
                (group.applied >= next.revision).then_some(())
            },
        )
        .await;
        let row = orders
            .get("o-0000")
            .stale()
            .at(endpoint)
            .await
            .expect("stale get");
        assert_eq!(row.value.as_ref(), before.get(&Bytes::from("o-0000")));

        // Every node holds every eventual state (each was sent the whole backup).
        for node in target.nodes() {
            let endpoint = target.endpoint(node.id).expect("address").to_string();
            let members = db.set("carts").members("alice").at(endpoint.clone());
            assert_eq!(members.await.expect("smembers").value, ["book", "tea"]);
            let bob = db.set("carts").members("bob").at(endpoint.clone());
            assert_eq!(bob.await.expect("smembers").value, ["lamp"]);
            let views = db.counter("views").get("home").at(endpoint.clone());
            assert_eq!(views.await.expect("get").value, 38);
            let alice = db.lww("profiles").get("alice").at(endpoint.clone());
            assert_eq!(alice.await.expect("get").value, Some(Bytes::from("v2")));
            for i in (0..EVENTUAL_KEYS).step_by(37) {
                let read = db
                    .lww("profiles")
                    .get(format!("p-{i:04}"))
                    .at(endpoint.clone());
                let value = read.await.expect("get").value.expect("restored");
                assert!(value.starts_with(format!("{i}-").as_bytes()));
            }
            let gone = db.lww("profiles").get("gone").at(endpoint.clone());
            assert_eq!(gone.await.expect("get").value, None);
            let docs = db.mvreg("docs").get("readme").at(endpoint);
            assert_eq!(
                docs.await.expect("get").value.values,
                [Bytes::from("hello")]
            );
        }
        // New writes on a restored set are not taken for adds it saw removed.
        let carts = db.set("carts");
        carts.add("alice", ["pen"]).all().await.expect("sadd");
        let members = carts.members("alice").await.expect("smembers").value;
        assert_eq!(members, ["book", "pen", "tea"]);
        let views = db.counter("views");
        views.incr("home", 2).all().await.expect("incr");
        assert_eq!(views.get("home").await.expect("get").value, 40);
    });

    // The target holds keyspaces now: another restore is refused.
    let again = cli(&target, &["restore", "--from", path_arg(&file)]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already holds keyspace"), "{stderr}");
}

#[test]
fn a_corrupted_or_truncated_backup_is_refused_and_restores_nothing() {
    let runtime = common::runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("small.capdial");
    let source = runtime.block_on(common::local_cluster());
    runtime.block_on(async {
        source
            .create_keyspace("orders", KeyspaceMode::Strong)
            .await
            .expect("create");
        source.create_keyspace("carts", SET).await.expect("create");
        let orders = source.client().strong("orders");
        for i in 0..20 {
            orders.put(format!("o-{i}"), "paid").await.expect("put");
        }
        let carts = source.client().set("carts");
        carts.add("alice", ["book"]).all().await.expect("sadd");
    });
    common::capdial_cli(&source, ["backup", "--out", path_arg(&file)]);
    let good = std::fs::read(&file).expect("the backup");

    let target = runtime.block_on(common::local_cluster());
    let flipped = dir.path().join("flipped.capdial");
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, &bytes).expect("write");
    let truncated = dir.path().join("truncated.capdial");
    std::fs::write(&truncated, &good[..good.len() - 3]).expect("write");
    for (file, says) in [(&flipped, "corrupted"), (&truncated, "truncated")] {
        let output = cli(&target, &["restore", "--from", path_arg(file)]);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{file:?}: {stderr}");
    }
    let listed = common::capdial_cli(&target, ["keyspace", "list", "--json"]);
    assert!(
        !listed.contains("orders") && !listed.contains("carts"),
        "{listed}"
    );

    // The source holds keyspaces: a restore into it is refused, and changes nothing.
    let output = cli(&source, &["restore", "--from", path_arg(&file)]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already holds keyspace"), "{stderr}");

    // The good file restores into the empty target.
    let restored = common::capdial_cli(&target, ["restore", "--from", path_arg(&file)]);
    assert!(restored.contains("restored 2 keyspaces"), "{restored}");
}
