//! Both modes end to end on a real 3-node cluster: strong put/get/cas/scan/delete through a
//! follower (the client library follows the leader hint), receipts naming the level served,
//! eventual lww/counter/set/mvreg written on one node and read on another, and the typed
//! errors a user gets for a wrong command, an unknown keyspace, an oversized key or value and
//! a level that does not apply; a counter write past the i64 range is refused, also through
//! the CLI binary; the CLI writes values too long for its command line from a file or stdin,
//! and reads a scan larger than a frame back page by page. A strong write resent after a lost
//! answer applies once; an eventual write resent through another node stores what its first
//! attempt stored (an `lww` put its time, a set removal its context).

mod common;

use capdial::client::conn::{Client, ConnError};
use capdial::eventual::{ReadValue, ValueType};
use capdial::protocol::admin::{FromNode, ToNode};
use capdial::protocol::{
    Answer, ClientError, ClientRequest, ClientResponse, KeyspaceMode, Operation, Position,
    ReadLevel, Receipt, Served, WriteLevel, WriteTime,
};
use capdial::strong::{KEY_BYTES_MAX, VALUE_BYTES_MAX};
use capdial::types::NodeId;
use common::{Cluster, READY_DEADLINE, Run, b, op, poll_until};
use std::time::Duration;

const ORDERS: &str = "orders";
const PROFILES: &str = "profiles";
const HITS: &str = "hits";
const CARTS: &str = "carts";
const DOCS: &str = "docs";
/// One CLI command in a debug build on two busy cores, connection included.
const CLI_DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn both_modes_end_to_end() {
    let cluster = Cluster::start(3).await;
    cluster.create_keyspace(ORDERS, KeyspaceMode::Strong).await;
    for (name, value_type) in [
        (PROFILES, ValueType::Lww),
        (HITS, ValueType::Counter),
        (CARTS, ValueType::Set),
        (DOCS, ValueType::MvReg),
    ] {
        cluster
            .create_keyspace(name, KeyspaceMode::Eventual(value_type))
            .await;
    }
    strong_through_a_follower(&cluster).await;
    strong_reads_at_each_level(&cluster).await;
    eventual_lww_and_mvreg_spread(&cluster).await;
    eventual_counter_and_set_converge(&cluster).await;
    eventual_quorum_and_session_levels(&cluster).await;
    typed_errors(&cluster).await;
    counter_overflow_is_refused(&cluster).await;
    cli_values_from_a_file_and_stdin(&cluster).await;
    retried_write_applies_once(&cluster).await;
    eventual_resends_keep_their_identity(&cluster).await;
    one_client_with_many_strong_writes_in_flight(&cluster).await;
    large_scan_through_the_cli(&cluster).await;
}

/// The error a request failed with, as the node typed it.
fn node_error(result: Result<(Answer, Receipt), ConnError>) -> ClientError {
    match result {
        Err(ConnError::Client(error)) => error,
        other => panic!("expected a typed error from the node, got {other:?}"),
    }
}

async fn leader_and_follower(cluster: &Cluster) -> (usize, usize) {
    let leader = poll_until(READY_DEADLINE, "a leader of orders", async || {
        cluster.leader_of(1, ORDERS).await
    })
    .await;
    let follower = (1..=3).find(|n| *n != leader).expect("three nodes");
    (leader, follower)
}

fn assert_member(node: NodeId) {
    assert!((1..=3).contains(&node.0), "served by a member: {node}");
}

async fn strong_through_a_follower(cluster: &Cluster) {
    let (_, follower) = leader_and_follower(cluster).await;
    // The client knows only a follower: it must follow the leader hint.
    let client = cluster.client_of(&[follower]).await;
    let (answer, receipt) = client
        .execute(ORDERS, op::put("order/1", "apples"), None, None, None)
        .await
        .expect("strong put through a follower");
    let Answer::Written { revision } = answer else {
        panic!("a put answers Written, got {answer:?}");
    };
    assert_eq!(receipt.level, Served::Committed);
    assert_member(receipt.node);
    let (answer, receipt) = client
        .execute(ORDERS, op::get("order/1"), None, None, None)
        .await
        .expect("linearizable get");
    let Answer::Strong(Some(found)) = answer else {
        panic!("the key is there, got {answer:?}");
    };
    assert_eq!(found.value, b("apples"));
    assert_eq!(found.mod_revision, revision);
    assert_eq!(receipt.level, Served::Read(ReadLevel::Linearizable));
    let Position::Raft { applied, .. } = receipt.position else {
        panic!("a strong read reports a Raft position: {receipt:?}");
    };
    assert!(applied >= revision, "served at or after the write");
    cas(&client).await;
}

async fn cas(client: &Client) {
    let (answer, _) = client
        .execute(ORDERS, op::get("order/1"), None, None, None)
        .await
        .expect("get");
    let Answer::Strong(Some(before)) = answer else {
        panic!("order/1 exists: {answer:?}");
    };
    let swapped = client
        .execute(
            ORDERS,
            op::cas("order/1", Some(before.mod_revision), "pears"),
            None,
            None,
            None,
        )
        .await
        .expect("cas");
    let (
        Answer::Cas {
            succeeded: true,
            current: Some(current),
            ..
        },
        receipt,
    ) = swapped
    else {
        panic!("cas at the current revision succeeds: {swapped:?}");
    };
    assert_eq!(current.value, b("pears"));
    assert_eq!(receipt.level, Served::Committed);
    let stale = client
        .execute(
            ORDERS,
            op::cas("order/1", Some(before.mod_revision), "plums"),
            None,
            None,
            None,
        )
        .await
        .expect("cas at an old revision");
    let (
        Answer::Cas {
            succeeded: false,
            current: Some(current),
            ..
        },
        _,
    ) = stale
    else {
        panic!("cas at an old revision fails: {stale:?}");
    };
    assert_eq!(current.value, b("pears"), "a failed cas changes nothing");
    let absent = client
        .execute(ORDERS, op::cas("order/1", None, "figs"), None, None, None)
        .await
        .expect("cas expecting absence");
    assert!(
        matches!(
            absent.0,
            Answer::Cas {
                succeeded: false,
                ..
            }
        ),
        "{absent:?}"
    );
    scan_and_delete(client).await;
}

async fn scan_and_delete(client: &Client) {
    for (key, value) in [("order/3", "c"), ("order/2", "b"), ("other/1", "x")] {
        client
            .execute(ORDERS, op::put(key, value), None, None, None)
            .await
            .expect("put");
    }
    let (answer, _) = client
        .execute(ORDERS, op::scan("order/", 10), None, None, None)
        .await
        .expect("scan");
    let Answer::Scan { entries, next } = answer else {
        panic!("a scan answers Scan: {answer:?}");
    };
    let keys: Vec<_> = entries.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(keys, vec![b("order/1"), b("order/2"), b("order/3")]);
    assert_eq!(next, None, "nothing follows");
    let (answer, _) = client
        .execute(ORDERS, op::scan("order/", 2), None, None, None)
        .await
        .expect("scan with a limit");
    assert!(
        matches!(&answer, Answer::Scan { entries, next: Some(next) }
            if entries.len() == 2 && *next == b("order/2")),
        "the limit cuts the page and names where to continue: {answer:?}"
    );
    let after = Operation::Scan {
        prefix: b("order/"),
        limit: 2,
        after: Some(b("order/2")),
    };
    let (answer, _) = client
        .execute(ORDERS, after, None, None, None)
        .await
        .expect("the next page");
    assert!(
        matches!(&answer, Answer::Scan { entries, next: None }
            if entries.len() == 1 && entries[0].0 == b("order/3")),
        "the next page starts after the key: {answer:?}"
    );
    client
        .execute(ORDERS, op::delete("order/2"), None, None, None)
        .await
        .expect("delete");
    let (answer, _) = client
        .execute(ORDERS, op::get("order/2"), None, None, None)
        .await
        .expect("get after delete");
    assert_eq!(answer, Answer::Strong(None));
}

async fn strong_reads_at_each_level(cluster: &Cluster) {
    let (_, follower) = leader_and_follower(cluster).await;
    let client = cluster.client().await;
    let (answer, _) = client
        .execute(ORDERS, op::put("level/1", "seen"), None, None, None)
        .await
        .expect("put");
    assert!(matches!(answer, Answer::Written { .. }));
    let at = cluster.addr(follower);
    // A follower read asks the leader for a read index: it sees the write at once.
    let (answer, receipt) = client
        .execute_at(
            &at,
            ORDERS,
            op::get("level/1"),
            Some(ReadLevel::Follower),
            None,
            None,
        )
        .await
        .expect("follower read on a follower");
    assert!(
        matches!(&answer, Answer::Strong(Some(v)) if v.value == b("seen")),
        "{answer:?}"
    );
    assert_eq!(receipt.level, Served::Read(ReadLevel::Follower));
    assert_eq!(receipt.node, NodeId(follower as u64));
    // A stale read may lag, but says by how much, and catches up.
    let what = "a stale read on the follower";
    let receipt = common::stale_read_until(&client, &at, ORDERS, "level/1", "seen", what).await;
    assert_eq!(receipt.level, Served::Read(ReadLevel::Stale));
    assert_eq!(receipt.node, NodeId(follower as u64));
    assert!(
        receipt.behind.is_some(),
        "a stale read says how far behind: {receipt:?}"
    );
    lease_read(&client).await;
}

async fn lease_read(client: &Client) {
    let (answer, receipt) = client
        .execute(
            ORDERS,
            op::get("level/1"),
            Some(ReadLevel::Lease),
            None,
            None,
        )
        .await
        .expect("lease read");
    assert!(
        matches!(&answer, Answer::Strong(Some(v)) if v.value == b("seen")),
        "{answer:?}"
    );
    // Without a valid lease the leader may fall back to a read index; it must say so.
    assert!(
        matches!(
            receipt.level,
            Served::Read(ReadLevel::Lease | ReadLevel::Linearizable)
        ),
        "{receipt:?}"
    );
}

async fn eventual_lww_and_mvreg_spread(cluster: &Cluster) {
    let client = cluster.client().await;
    let (n1, n2) = (cluster.addr(1), cluster.addr(2));
    let (answer, receipt) = client
        .execute_at(
            &n1,
            PROFILES,
            op::put("alice", "v1"),
            None,
            Some(WriteLevel::Local),
            None,
        )
        .await
        .expect("lww put on n1");
    assert!(
        matches!(answer, Answer::Acknowledged { acks } if acks >= 1),
        "{answer:?}"
    );
    assert_eq!(receipt.level, Served::Write(WriteLevel::Local));
    assert_eq!(receipt.node, NodeId(1));
    let receipt = poll_until(READY_DEADLINE, "alice on n2", async || {
        let (answer, receipt) = client
            .execute_at(&n2, PROFILES, op::get("alice"), None, None, None)
            .await
            .ok()?;
        let ReadValue::Lww { value, .. } = eventual(answer) else {
            panic!("a lww keyspace reads as Lww");
        };
        (value == Some(b("v1"))).then_some(receipt)
    })
    .await;
    assert_eq!(receipt.level, Served::Read(ReadLevel::Local));
    assert_eq!(receipt.node, NodeId(2));
    client
        .execute_at(&n1, DOCS, op::put("readme", "draft"), None, None, None)
        .await
        .expect("mvreg put on n1");
    poll_until(READY_DEADLINE, "the mvreg value on n2", async || {
        let (answer, _) = client
            .execute_at(&n2, DOCS, op::get("readme"), None, None, None)
            .await
            .ok()?;
        let ReadValue::MvReg { siblings, .. } = eventual(answer) else {
            panic!("an mvreg keyspace reads as MvReg");
        };
        (siblings == vec![b("draft")]).then_some(())
    })
    .await;
}

fn eventual(answer: Answer) -> ReadValue {
    match answer {
        Answer::Eventual(value) => value,
        other => panic!("an eventual read answers Eventual, got {other:?}"),
    }
}

async fn eventual_counter_and_set_converge(cluster: &Cluster) {
    let client = cluster.client().await;
    for (node, by) in [(1, 5), (2, -2), (3, 10)] {
        client
            .execute_at(
                &cluster.addr(node),
                HITS,
                op::incr("page", by),
                None,
                None,
                None,
            )
            .await
            .expect("counter add");
    }
    for (node, member) in [(1, "apple"), (2, "pear")] {
        client
            .execute_at(
                &cluster.addr(node),
                CARTS,
                op::sadd("cart", &[member]),
                None,
                None,
                None,
            )
            .await
            .expect("sadd");
    }
    for node in 1..=3 {
        let at = cluster.addr(node);
        poll_until(
            READY_DEADLINE,
            &format!("the counter and set on n{node}"),
            async || {
                let (counter, _) = client
                    .execute_at(&at, HITS, op::get("page"), None, None, None)
                    .await
                    .ok()?;
                let (set, _) = client
                    .execute_at(&at, CARTS, op::get("cart"), None, None, None)
                    .await
                    .ok()?;
                let want_set = [b("apple"), b("pear")];
                (eventual(counter) == ReadValue::Counter(13)
                    && eventual(set).members() == Some(&want_set[..]))
                .then_some(())
            },
        )
        .await;
    }
}

async fn eventual_quorum_and_session_levels(cluster: &Cluster) {
    let client = cluster.client().await;
    let (answer, receipt) = client
        .execute_at(
            &cluster.addr(2),
            PROFILES,
            op::put("bob", "q"),
            None,
            Some(WriteLevel::Quorum),
            None,
        )
        .await
        .expect("quorum write");
    assert!(
        matches!(answer, Answer::Acknowledged { acks } if acks >= 2),
        "{answer:?}"
    );
    assert_eq!(receipt.level, Served::Write(WriteLevel::Quorum));
    // A quorum read meets the quorum write on at least one node: no waiting needed.
    let (answer, receipt) = client
        .execute_at(
            &cluster.addr(3),
            PROFILES,
            op::get("bob"),
            Some(ReadLevel::Quorum),
            None,
            None,
        )
        .await
        .expect("quorum read");
    assert!(matches!(eventual(answer), ReadValue::Lww { value: Some(v), .. } if v == b("q")));
    assert_eq!(receipt.level, Served::Read(ReadLevel::Quorum));
    let (_, receipt) = client
        .execute_at(
            &cluster.addr(1),
            PROFILES,
            op::put("carol", "s"),
            None,
            None,
            None,
        )
        .await
        .expect("local write");
    let Position::Eventual {
        token: Some(token), ..
    } = receipt.position
    else {
        panic!("an eventual write carries its session token: {receipt:?}");
    };
    // Read-your-writes on another node: served once that node has seen the write.
    let (answer, receipt) = client
        .execute_at(
            &cluster.addr(3),
            PROFILES,
            op::get("carol"),
            Some(ReadLevel::Session),
            None,
            Some(token),
        )
        .await
        .expect("session read");
    assert!(matches!(eventual(answer), ReadValue::Lww { value: Some(v), .. } if v == b("s")));
    assert_eq!(receipt.level, Served::Read(ReadLevel::Session));
}

/// A request that must be refused, and how.
struct Refused {
    keyspace: &'static str,
    operation: Operation,
    read: Option<ReadLevel>,
    write: Option<WriteLevel>,
    expected: fn(&ClientError) -> bool,
}

fn refused(
    keyspace: &'static str,
    operation: Operation,
    read: Option<ReadLevel>,
    write: Option<WriteLevel>,
    expected: fn(&ClientError) -> bool,
) -> Refused {
    Refused {
        keyspace,
        operation,
        read,
        write,
        expected,
    }
}

fn refusals() -> Vec<Refused> {
    use ClientError as E;
    use ReadLevel::{Linearizable, Quorum};
    let long_key = "k".repeat(KEY_BYTES_MAX + 1);
    let big_value = "v".repeat(VALUE_BYTES_MAX + 1);
    vec![
        refused(
            ORDERS,
            op::incr("k", 1),
            None,
            None,
            |e| matches!(e, E::WrongType { command, .. } if command == "incr"),
        ),
        refused(CARTS, op::cas("k", None, "v"), None, None, |e| {
            matches!(e, E::WrongType { .. })
        }),
        refused(HITS, op::sadd("k", &["m"]), None, None, |e| {
            matches!(e, E::WrongType { .. })
        }),
        refused(
            "nope",
            op::get("k"),
            None,
            None,
            |e| matches!(e, E::UnknownKeyspace { name } if name == "nope"),
        ),
        refused(
            ORDERS,
            op::put(&long_key, "v"),
            None,
            None,
            |e| matches!(e, E::TooLarge { bytes_max, .. } if *bytes_max == KEY_BYTES_MAX),
        ),
        refused(
            PROFILES,
            op::put("k", &big_value),
            None,
            None,
            |e| matches!(e, E::TooLarge { bytes_max, .. } if *bytes_max == VALUE_BYTES_MAX),
        ),
        refused(ORDERS, op::get("k"), Some(Quorum), None, |e| {
            matches!(e, E::ReadLevelNotApplicable { level: Quorum, .. })
        }),
        refused(PROFILES, op::get("k"), Some(Linearizable), None, |e| {
            matches!(
                e,
                E::ReadLevelNotApplicable {
                    level: Linearizable,
                    ..
                }
            )
        }),
        refused(
            ORDERS,
            op::put("k", "v"),
            None,
            Some(WriteLevel::Quorum),
            |e| matches!(e, E::WriteLevelNotApplicable),
        ),
        refused(ORDERS, op::scan("", 0), None, None, |e| {
            matches!(e, E::ScanLimit { limit: 0, .. })
        }),
    ]
}

async fn typed_errors(cluster: &Cluster) {
    let client = cluster.client().await;
    for case in refusals() {
        let name = case.operation.name();
        let result = client
            .execute(case.keyspace, case.operation, case.read, case.write, None)
            .await;
        let error = node_error(result);
        assert!(
            (case.expected)(&error),
            "{name} on {} ({:?}, {:?}): unexpected {error:?}",
            case.keyspace,
            case.read,
            case.write
        );
    }
    // After all that, the node still serves.
    client
        .execute(ORDERS, op::get("order/1"), None, None, None)
        .await
        .expect("the cluster still serves after refusing bad requests");
}

/// Issue 12: `incr hits views 9223372036854775807` twice, then `incr hits views 5`, were all
/// acknowledged while the read stayed at i64::MAX: the last two writes were lost. Now each
/// is refused with `CounterOverflow`, through the library and with a clear CLI message.
async fn counter_overflow_is_refused(cluster: &Cluster) {
    let client = cluster.client().await;
    let at = cluster.addr(1);
    let incr = async |by| {
        let add = op::incr("views", by);
        client.execute_at(&at, HITS, add, None, None, None).await
    };
    incr(i64::MAX).await.expect("the first increment fits");
    for by in [i64::MAX, 5] {
        let error = node_error(incr(by).await);
        let value = i64::MAX;
        assert_eq!(error, ClientError::CounterOverflow { value, by });
    }
    let run = cli(cluster, 1, &["incr", HITS, "views", "5"], None).await;
    assert_eq!(
        run.status.and_then(|s| s.code()),
        Some(1),
        "{}",
        run.output()
    );
    let message = "counter at 9223372036854775807 cannot change by 5";
    assert!(run.stderr.contains(message), "{}", run.output());
    let run = cli(cluster, 1, &["decr", HITS, "views", "5"], None).await;
    assert!(run.status.is_some_and(|s| s.success()), "{}", run.output());
    let run = cli(cluster, 1, &["get", HITS, "views"], None).await;
    let value = (i64::MAX - 5).to_string();
    assert!(run.stdout.starts_with(&value), "{}", run.output());
}

/// A value over the OS's limit for one argument (128 KiB on Linux) could not be written from
/// the CLI (issue 12). Now `--value-file PATH` and `-` (stdin) carry one, byte for byte.
async fn cli_values_from_a_file_and_stdin(cluster: &Cluster) {
    const BYTES: usize = 300 * 1024;
    let binary: Vec<u8> = (0..=255u8).cycle().take(BYTES).collect();
    let text: Vec<u8> = b"from stdin, "
        .iter()
        .copied()
        .cycle()
        .take(BYTES)
        .collect();
    let path = cluster.dir.path().join("big-value.bin");
    std::fs::write(&path, &binary).expect("write the value file");
    let path = path.to_str().expect("a UTF-8 temporary path");
    let writes = [
        (vec!["put", ORDERS, "big-file", "--value-file", path], None),
        (vec!["put", PROFILES, "big-stdin", "-"], Some(text.clone())),
        (
            vec!["cas", ORDERS, "big-cas", "--expect", "absent", "-"],
            Some(text.clone()),
        ),
    ];
    for (args, input) in writes {
        let run = cli(cluster, 1, &args, input).await;
        assert!(run.status.is_some_and(|s| s.success()), "{}", run.output());
        assert!(run.stdout.starts_with("OK\n"), "{args:?}: {}", run.output());
    }
    // Byte for byte, through the library; and the text back through the CLI.
    let client = cluster.client().await;
    for (keyspace, key, want) in [
        (ORDERS, "big-file", &binary),
        (ORDERS, "big-cas", &text),
        (PROFILES, "big-stdin", &text),
    ] {
        // The eventual write went to n1 only; a strong read follows the leader.
        let at = cluster.addr(1);
        let read = op::get(key);
        let (answer, _) = match keyspace {
            ORDERS => client.execute(keyspace, read, None, None, None).await,
            _ => {
                client
                    .execute_at(&at, keyspace, read, None, None, None)
                    .await
            }
        }
        .expect("get the big value");
        let got = match answer {
            Answer::Strong(Some(versioned)) => versioned.value,
            Answer::Eventual(ReadValue::Lww { value: Some(v), .. }) => v,
            other => panic!("{key}: no value: {other:?}"),
        };
        assert!(
            got == want[..],
            "{key}: {} bytes back, not the same",
            got.len()
        );
    }
    let run = cli(cluster, 1, &["get", PROFILES, "big-stdin"], None).await;
    let first_line = run.stdout.lines().next().unwrap_or_default();
    assert!(first_line.as_bytes() == text, "{}", &run.stderr);
}

/// Runs the `capdial` binary against node `nX`, feeding it `input` on stdin (none if
/// `None`), on a blocking thread: it waits for the process.
async fn cli(cluster: &Cluster, node: usize, args: &[&str], input: Option<Vec<u8>>) -> Run {
    let certs = cluster.certs.to_str().expect("a UTF-8 temporary path");
    let connection = ["--endpoint", &cluster.addr(node), "--certs", certs];
    let args: Vec<String> = args
        .iter()
        .chain(&connection)
        .chain(&["--client-name", common::CLIENT_NAME])
        .map(|arg| arg.to_string())
        .collect();
    let dir = cluster.dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run_capdial_with_input(&dir, &args, input, CLI_DEADLINE)
    })
    .await
    .expect("the CLI's thread")
}

/// The same `(client, seq)` sent twice to the leader, as a retry would: applied once, and the
/// retry answered with the first result.
async fn retried_write_applies_once(cluster: &Cluster) {
    let (leader, _) = leader_and_follower(cluster).await;
    let endpoint = common::client_endpoint(&cluster.certs, common::CLIENT_NAME);
    let connection = common::connect_raw(&endpoint, cluster.node(leader).address)
        .await
        .expect("connect to the leader");
    let request = ToNode::Data(common::request(
        0x5eed,
        ORDERS,
        1,
        op::put("retried", "once"),
    ));
    let mut revisions = Vec::new();
    for _ in 0..2 {
        let answer = common::request_raw(&connection, &request).await;
        let Ok(FromNode::Data(ClientResponse {
            result: Ok((Answer::Written { revision }, _)),
        })) = answer
        else {
            panic!("the leader applies the put: {answer:?}");
        };
        revisions.push(revision);
    }
    assert_eq!(
        revisions[0], revisions[1],
        "the retry gets the first answer"
    );
    let client = cluster.client().await;
    let (answer, _) = client
        .execute(ORDERS, op::get("retried"), None, None, None)
        .await
        .expect("get");
    let Answer::Strong(Some(found)) = answer else {
        panic!("the key is there: {answer:?}");
    };
    assert_eq!(found.mod_revision, revisions[0], "applied once, not twice");
    // Seq 2 answered, and it acknowledges seq 1: a resend of seq 1 now comes from a stale
    // client, and is refused rather than applied again.
    let ToNode::Data(first) = request else {
        unreachable!("built as data above");
    };
    let acknowledging = ClientRequest {
        seq: 2,
        first_unacked: 2,
        operation: op::put("retried", "second"),
        ..first.clone()
    };
    let answer = common::request_raw(&connection, &ToNode::Data(acknowledging)).await;
    assert!(
        matches!(
            &answer,
            Ok(FromNode::Data(ClientResponse { result: Ok(_) }))
        ),
        "{answer:?}"
    );
    let stale = common::request_raw(&connection, &ToNode::Data(first)).await;
    let Ok(FromNode::Data(ClientResponse { result: Err(error) })) = stale else {
        panic!("a resend of an acknowledged seq is refused: {stale:?}");
    };
    assert_eq!(
        error,
        ClientError::AlreadyAcknowledged {
            seq: 1,
            first_unacked: 2
        }
    );
}

/// The story: an eventual write whose answer was lost, resent through another node after
/// someone else wrote the key, replaced the newer write: the resent `lww` put took a new
/// time, the resent set removal removed what the second node had seen by then. Now each
/// carries its identity (the client's time, the context of the read it is based on), and the
/// resend, acknowledged, changes nothing.
async fn eventual_resends_keep_their_identity(cluster: &Cluster) {
    let client = cluster.client().await;
    let endpoint = common::client_endpoint(&cluster.certs, common::CLIENT_NAME);
    let mut raw = Vec::new();
    for node in 1..=3 {
        let address = cluster.node(node).address;
        raw.push(
            common::connect_raw(&endpoint, address)
                .await
                .expect("connect"),
        );
    }
    let send = async |node: usize, request: &ClientRequest| {
        let answer = common::request_raw(&raw[node - 1], &ToNode::Data(request.clone())).await;
        assert!(
            matches!(
                &answer,
                Ok(FromNode::Data(ClientResponse {
                    result: Ok((Answer::Acknowledged { .. }, _))
                }))
            ),
            "n{node} acknowledges: {answer:?}"
        );
    };
    let read_on = async |node: usize, keyspace: &str, key: &str| {
        let at = cluster.addr(node);
        let (answer, _) = client
            .execute_at(&at, keyspace, op::get(key), None, None, None)
            .await
            .expect("local read");
        eventual(answer)
    };
    // A second ago by this machine's clock: older than any time the library gives later.
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    let put = ClientRequest {
        written_at: Some(WriteTime {
            physical_ms: since_epoch.as_millis() as u64 - 1_000,
            logical: 0,
        }),
        ..common::request(0x1d, PROFILES, 1, op::put("resent", "first"))
    };
    send(1, &put).await;
    let n2 = cluster.addr(2);
    client
        .execute_at(&n2, PROFILES, op::put("resent", "newer"), None, None, None)
        .await
        .expect("a newer put through n2");
    let newer = ReadValue::Lww {
        value: Some(b("newer")),
        stamp: None,
    };
    let lww_value = |value: ReadValue| match value {
        ReadValue::Lww { value, .. } => ReadValue::Lww { value, stamp: None },
        other => other,
    };
    poll_until(READY_DEADLINE, "the newer put on n3", async || {
        (lww_value(read_on(3, PROFILES, "resent").await) == newer).then_some(())
    })
    .await;
    for node in [3, 1] {
        send(node, &put).await;
        let value = lww_value(read_on(node, PROFILES, "resent").await);
        assert_eq!(value, newer, "n{node} after the resend");
    }

    // A set removal based on a read of n1, resent through n3 after n2 added the member again.
    let n1 = cluster.addr(1);
    client
        .execute_at(&n1, CARTS, op::sadd("resent", &["x"]), None, None, None)
        .await
        .expect("sadd through n1");
    let ReadValue::Set { context, .. } = read_on(1, CARTS, "resent").await else {
        panic!("a set keyspace reads as a set");
    };
    let remove = ClientRequest {
        operation: Operation::SetRemove {
            key: b("resent"),
            members: vec![b("x")],
            context: Some(context),
        },
        ..common::request(0x1d, CARTS, 2, op::get("resent"))
    };
    send(1, &remove).await;
    assert_eq!(read_on(1, CARTS, "resent").await.members(), Some(&[][..]));
    client
        .execute_at(&n2, CARTS, op::sadd("resent", &["x"]), None, None, None)
        .await
        .expect("sadd again through n2");
    poll_until(READY_DEADLINE, "the second add on n3", async || {
        let members = read_on(3, CARTS, "resent").await;
        (members.members() == Some(&[b("x")][..])).then_some(())
    })
    .await;
    send(3, &remove).await;
    assert_eq!(
        read_on(3, CARTS, "resent").await.members(),
        Some(&[b("x")][..]),
        "the resent removal leaves the newer add"
    );
    // The library reads the context itself: its removal through n3 takes the add it saw.
    let n3 = cluster.addr(3);
    client
        .execute_at(&n3, CARTS, op::srem("resent", &["x"]), None, None, None)
        .await
        .expect("srem through the library");
    assert_eq!(read_on(3, CARTS, "resent").await.members(), Some(&[][..]));
}

/// The story: a client numbered its requests from one counter and the machine kept only its
/// last write, so two strong writes in flight through one `Client` failed with a sequence
/// error whenever they committed out of order. Now one shared client keeps 64 in flight.
async fn one_client_with_many_strong_writes_in_flight(cluster: &Cluster) {
    let client = cluster.client().await;
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..64 {
        let client = client.clone();
        writes.spawn(async move {
            let key = format!("inflight-{i}");
            let result = client
                .execute(ORDERS, op::put(&key, "v"), None, None, None)
                .await;
            (key, result)
        });
    }
    let mut revisions = std::collections::BTreeSet::new();
    while let Some(joined) = writes.join_next().await {
        let (key, result) = joined.expect("a write task panicked");
        match result {
            Ok((Answer::Written { revision }, _)) => assert!(revisions.insert(revision)),
            other => panic!("{key}: every write applies once: {other:?}"),
        }
    }
    assert_eq!(revisions.len(), 64, "64 distinct entries");
    let (answer, _) = client
        .execute(ORDERS, op::scan("inflight-", 100), None, None, None)
        .await
        .expect("scan");
    let Answer::Scan { entries, .. } = answer else {
        panic!("a scan answers entries: {answer:?}");
    };
    assert_eq!(entries.len(), 64);
}

/// Keys written for the large scan, and the bytes of each value: 8.4 MiB in all, more than one
/// frame (8 MiB) can carry, so the answer takes pages.
const LARGE_KEYS: usize = 72;
const LARGE_VALUE_BYTES: usize = 120 * 1024;

/// The story: a scan whose answer passed the frame limit was reset by the node, the client
/// resent it as a lost connection (each resend one more entry in the Raft log, as a
/// linearizable scan goes through it), and the user saw "not the leader" seconds later. Now
/// `capdial scan` reads page after page and prints every key; `--limit` stops it early and
/// says where to continue, and `--after` continues there.
async fn large_scan_through_the_cli(cluster: &Cluster) {
    let client = cluster.client().await;
    let value_of = |i: usize| format!("{i:03}{}", "v".repeat(LARGE_VALUE_BYTES - 3));
    for i in 0..LARGE_KEYS {
        let put = op::put(&format!("big/{i:03}"), &value_of(i));
        client
            .execute(ORDERS, put, None, None, None)
            .await
            .expect("put a large value");
    }
    let lines = scan_cli(cluster, &[]).await;
    assert_eq!(lines.len(), LARGE_KEYS + 1, "every key and a receipt");
    for (i, line) in lines[..LARGE_KEYS].iter().enumerate() {
        let expected = format!("big/{i:03} = {}", value_of(i));
        assert!(*line == expected, "line {i} is big/{i:03} with its value");
    }
    let receipt = &lines[LARGE_KEYS];
    assert!(
        receipt.starts_with("receipt: linearizable") && receipt.contains(" pages, the first at "),
        "{receipt}"
    );
    let limited = scan_cli(cluster, &["--limit", "40"]).await;
    assert_eq!(
        limited.len(),
        40 + 2,
        "40 keys, where to continue, a receipt"
    );
    assert_eq!(
        limited[40],
        "(more keys follow: continue with --after big/039)"
    );
    let rest = scan_cli(cluster, &["--after", "big/039"]).await;
    assert_eq!(
        rest.len(),
        LARGE_KEYS - 40 + 1,
        "the other keys and a receipt"
    );
    assert!(
        rest[0].starts_with("big/040 = 040v"),
        "continues after the key"
    );
}

/// `capdial scan orders big/ EXTRA...` against the cluster: its stdout lines, once it succeeded.
async fn scan_cli(cluster: &Cluster, extra: &[&str]) -> Vec<String> {
    let certs = cluster.certs.to_string_lossy().into_owned();
    let endpoints = cluster.endpoints().join(",");
    let dir = cluster.dir.path().to_path_buf();
    let mut args: Vec<String> = ["scan", ORDERS, "big/", "--certs", &certs]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    args.extend(["--endpoint", &endpoints, "--timeout", "20s"].map(String::from));
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::run_capdial(&dir, &args, Duration::from_secs(60))
    })
    .await
    .expect("the CLI ran");
    assert!(
        run.status.is_some_and(|status| status.success()),
        "capdial scan failed:\n{}",
        run.output()
    );
    run.stdout.lines().map(str::to_string).collect()
}
