//! The shell's commands against three real nodes in this process (QUIC on 127.0.0.1, redb
//! in a temporary directory): leader following, a pinned request to an isolated node, the
//! eventual side converging after heal, status as JSON.

use super::run_line;
use crate::client::conn::{Client, ClientOptions};
use crate::net::tls;
use crate::node::{self, NodeConfig};
use crate::types::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Stops the nodes when the test ends, pass or fail.
struct Cluster {
    addresses: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn free_port() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn start() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
    tls::init(&dir.path().join("certs"), &names, &["admin".to_string()]).unwrap();
    let addresses: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    let initial: BTreeMap<NodeId, String> = (1..=3)
        .map(|i| (NodeId(i), addresses[i as usize - 1].to_string()))
        .collect();
    let (stop, _) = watch::channel(false);
    for i in 1..=3u64 {
        let config = NodeConfig {
            id: NodeId(i),
            listen: addresses[i as usize - 1],
            initial_cluster: initial.clone(),
            data_dir: dir.path().join(format!("n{i}")),
            certs: dir.path().join("certs"),
            join: false,
            cache_bytes: 8 << 20,
            clock_skew_max: std::time::Duration::from_secs(300),
            watch: Default::default(),
        };
        let mut stopped = stop.subscribe();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            node::run(config, shutdown).await.unwrap();
        });
    }
    Cluster {
        addresses,
        stop,
        dir,
    }
}

async fn line(client: &Client, text: &str) -> Result<String, String> {
    let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let mut out = Vec::new();
    match run_line(client, &words, false, &mut out).await {
        Ok(()) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Err(error) => Err(format!("{error:#}")),
    }
}

/// Runs `text` until `done` accepts its result, or panics at the deadline.
async fn until(
    client: &Client,
    text: &str,
    done: impl Fn(&Result<String, String>) -> bool,
) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = line(client, text).await;
        if done(&result) {
            return result;
        }
        assert!(Instant::now() < deadline, "{text}: still {result:?}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_commands_on_a_real_cluster() {
    let cluster = start();
    let endpoint = cluster.addresses[1].to_string();
    let n3 = cluster.addresses[2].to_string();
    let options = ClientOptions::new(vec![endpoint], cluster.dir.path().join("certs"));
    let client = Client::connect(options).await.unwrap();
    let ok = |result: &Result<String, String>| result.is_ok();
    until(&client, "keyspace create orders --mode strong", ok)
        .await
        .unwrap();
    until(
        &client,
        "keyspace create carts --mode eventual --type set",
        ok,
    )
    .await
    .unwrap();
    until(&client, "put orders k v", ok).await.unwrap();
    let got = line(&client, "get orders k").await.unwrap();
    assert!(got.starts_with("v\nreceipt: linearizable by n"), "{got}");

    let faults = line(&client, "fault isolate n3").await.unwrap();
    assert_eq!(faults, "fault rules: isolate n3\n");
    let pinned = format!("put orders k2 x --endpoint {n3}");
    let refused = until(&client, &pinned, |r| {
        r.as_ref().is_err_and(|e| e.starts_with("unavailable"))
    })
    .await;
    assert!(refused.is_err());
    let sadd = format!("sadd carts c a --endpoint {n3}");
    let added = line(&client, &sadd).await.unwrap();
    assert!(added.contains("receipt: local write by n3"), "{added}");
    line(&client, "sadd carts c b").await.unwrap();

    assert_eq!(
        line(&client, "fault heal").await.unwrap(),
        "fault rules: none\n"
    );
    let merged = |r: &Result<String, String>| r.as_ref().is_ok_and(|t| t.starts_with("{a, b}"));
    until(
        &client,
        &format!("smembers carts c --endpoint {n3}"),
        merged,
    )
    .await
    .unwrap();
    until(&client, "smembers carts c", merged).await.unwrap();

    let watch = line(&client, "status --watch").await.unwrap_err();
    assert!(watch.contains("command line"), "{watch}");
    let usage = line(&client, "put orders").await.unwrap_err();
    assert!(
        usage.starts_with("the following required arguments"),
        "{usage}"
    );
    let help = line(&client, "put --help").await.unwrap();
    assert!(help.contains("Usage: put [OPTIONS]"), "{help}");

    let status = line(&client, "status --json").await.unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(
        nodes.iter().all(|node| node["reachable"] == true),
        "{status}"
    );
}
