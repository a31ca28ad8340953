//! The tour of `capdial demo`: real operations on a local cluster that show where each
//! keyspace sits on the CAP dial, each step checked and recorded in [`Steps`].
//!
//! ```text
//! keyspaces ─ writes to both ─ latency per level ─ isolate n3 ─┬─ orders on n3: Unavailable
//!                                                              ├─ orders on the majority: written
//!                                                              └─ carts on n3 and n1: accepted
//!          heal ─ carts converge on every node ─ orders on n3 catches up (stale read)
//! ```
//!
//! A step that does not behave as promised is recorded as failed and the tour goes on when
//! it can; an error that leaves nothing to show (no keyspaces) ends it.

use super::cluster::{LocalCluster, LocalNode, node_status};
use super::report::{LatencyRow, Steps, latency_table, millis};
use super::retry::{RETRY_PAUSE, client_error, describe, retry_until};
use crate::cli::ops::format_receipt;
use crate::client::conn::{Client, ConnError};
use crate::eventual::{ReadValue, ValueType};
use crate::net::faults::{FaultRule, FaultRules};
use crate::protocol::admin::{AdminAnswer, AdminError, AdminRequest, NodeStatus};
use crate::protocol::{
    Answer, ClientError, KeyspaceMode, Operation, ReadLevel, Receipt, WriteLevel,
};
use crate::types::LogIndex;
use anyhow::{Context, bail};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The strong keyspace of the tour.
pub(crate) const ORDERS: &str = "orders";
/// The eventual set keyspace of the tour.
pub(crate) const CARTS: &str = "carts";
/// Operations per row of the latency table: enough for a p50, few enough to stay fast.
const LATENCY_OPS: usize = 20;
/// How long any single wait of the tour may take (an election, convergence, catch-up).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The cart every step writes to.
const CART: &str = "alice";
/// The order written on the majority side during the partition.
const PARTITION_ORDER: &str = "o-2";
const PARTITION_ORDER_VALUE: &str = "1 cappuccino (placed during the partition)";

/// The state the tour carries from step to step.
pub(crate) struct Tour<'a> {
    pub(crate) client: &'a Client,
    pub(crate) cluster: &'a LocalCluster,
    pub(crate) steps: Steps,
    started: Instant,
}

fn bytes(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn put(key: &str, value: &str) -> Operation {
    Operation::Put {
        key: bytes(key),
        value: bytes(value),
        context: None,
    }
}

fn get(key: &str) -> Operation {
    Operation::Get { key: bytes(key) }
}

fn sadd(key: &str, member: &str) -> Operation {
    Operation::SetAdd {
        key: bytes(key),
        members: vec![bytes(member)],
    }
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

/// What an answer carries, in a few words.
pub(crate) fn describe_answer(answer: &Answer) -> String {
    match answer {
        Answer::Strong(Some(versioned)) => format!(
            "{:?} (revision {})",
            text(&versioned.value),
            versioned.mod_revision.0
        ),
        Answer::Strong(None) => "(absent)".to_string(),
        Answer::Written { revision } => format!("written at revision {}", revision.0),
        Answer::Acknowledged { acks } => format!("acknowledged by {acks} replica(s)"),
        Answer::Eventual(ReadValue::Set { members, .. }) => {
            format!("{{{}}}", members_text(members))
        }
        Answer::Eventual(ReadValue::Lww {
            value: Some(value), ..
        }) => format!("{:?}", text(value)),
        other => format!("{other:?}"),
    }
}

fn members_text(members: &[Bytes]) -> String {
    members
        .iter()
        .map(|member| text(member))
        .collect::<Vec<_>>()
        .join(", ")
}

fn set_members(answer: &Answer) -> Option<BTreeSet<String>> {
    match answer {
        Answer::Eventual(ReadValue::Set { members, .. }) => {
            Some(members.iter().map(|member| text(member)).collect())
        }
        _ => None,
    }
}

fn orders_group(status: &NodeStatus) -> Option<&crate::protocol::admin::GroupStatus> {
    status.strong.iter().find(|group| group.keyspace == ORDERS)
}

impl<'a> Tour<'a> {
    pub(crate) fn new(client: &'a Client, cluster: &'a LocalCluster, started: Instant) -> Self {
        Tour {
            client,
            cluster,
            steps: Steps::default(),
            started,
        }
    }

    fn heading(&self, title: &str) {
        println!(
            "\n[{:>6.2}s] == {title}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn check(&mut self, name: &str, passed: bool, detail: impl Into<String>) -> bool {
        println!("{}", self.steps.record(name, passed, detail));
        passed
    }

    fn node(&self, index: usize) -> anyhow::Result<&'a LocalNode> {
        self.cluster
            .nodes()
            .get(index)
            .with_context(|| format!("the cluster has no node #{}", index + 1))
    }

    /// Runs every part of the tour. An `Err` means it could not go on.
    pub(crate) async fn run(&mut self) -> anyhow::Result<()> {
        self.create_keyspaces().await?;
        self.first_writes().await?;
        self.latency().await;
        self.partition().await?;
        self.heal().await
    }

    async fn create_keyspaces(&mut self) -> anyhow::Result<()> {
        self.heading("two keyspaces, two places on the dial");
        let keyspaces = [
            (
                ORDERS,
                KeyspaceMode::Strong,
                "Raft: linearizable, needs a majority",
            ),
            (
                CARTS,
                KeyspaceMode::Eventual(ValueType::Set),
                "CRDT set: every node accepts writes, they converge",
            ),
        ];
        for (name, mode, what) in keyspaces {
            let deadline = Instant::now() + STEP_TIMEOUT;
            let request = || {
                self.client.admin(AdminRequest::CreateKeyspace {
                    name: name.to_string(),
                    mode,
                })
            };
            let result = match retry_until(deadline, request).await {
                Err(ConnError::Admin(AdminError::KeyspaceExists { .. })) => {
                    Ok("already there".to_string())
                }
                Ok(_) => Ok(format!("created ({what})")),
                Err(error) => Err(describe(&error)),
            };
            let passed = result.is_ok();
            let detail = result.unwrap_or_else(|error| error);
            if !self.check(&format!("keyspace {name}: {mode}"), passed, detail) {
                bail!("could not create keyspace {name}");
            }
        }
        self.wait_catalog_everywhere().await
    }

    /// Waits until every node applied both catalog entries, so pinned requests find them.
    async fn wait_catalog_everywhere(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let started = Instant::now();
        for node in self.cluster.nodes() {
            loop {
                let listed = self
                    .client
                    .admin_at(&node.address, AdminRequest::ListKeyspaces)
                    .await;
                let known = matches!(&listed, Ok(AdminAnswer::Keyspaces(list))
                    if [ORDERS, CARTS].iter().all(|name| list.iter().any(|k| k.name == *name)));
                if known {
                    break;
                }
                if Instant::now() >= deadline {
                    self.check(
                        "every node knows both keyspaces",
                        false,
                        node.id.to_string(),
                    );
                    bail!("node {} did not apply the catalog in time", node.id);
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        let detail = format!("after {} ms", started.elapsed().as_millis());
        self.check("every node knows both keyspaces", true, detail);
        Ok(())
    }

    /// Runs one request with retries, prints it with its receipt and the time it took (retries
    /// included). A retry here is a new request: fine for the tour's puts and set adds, which
    /// write the same value again at worst.
    async fn show(
        &self,
        label: &str,
        at: Option<&str>,
        keyspace: &str,
        operation: Operation,
        read: Option<ReadLevel>,
        write: Option<WriteLevel>,
    ) -> Result<(Answer, Receipt), ConnError> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let started = Instant::now();
        let result = retry_until(deadline, || {
            let operation = operation.clone();
            async move {
                match at {
                    Some(address) => {
                        self.client
                            .execute_at(address, keyspace, operation, read, write, None)
                            .await
                    }
                    None => {
                        self.client
                            .execute(keyspace, operation, read, write, None)
                            .await
                    }
                }
            }
        })
        .await;
        let took = millis(started.elapsed());
        match &result {
            Ok((answer, receipt)) => {
                println!("  {label}  ->  {}  ({took} ms)", describe_answer(answer));
                println!("      {}", format_receipt(answer, receipt));
            }
            Err(error) => println!("  {label}  ->  error: {}  ({took} ms)", describe(error)),
        }
        result
    }

    async fn first_writes(&mut self) -> anyhow::Result<()> {
        self.heading("writes to both");
        let value = "2 espresso, 1 croissant";
        let label = format!("put {ORDERS} o-1 {value:?}");
        let written = self
            .show(&label, None, ORDERS, put("o-1", value), None, None)
            .await;
        let ok = matches!(written, Ok((Answer::Written { .. }, _)));
        self.check("strong write committed", ok, "");
        let label = format!("get {ORDERS} o-1 --read linearizable");
        let read = self
            .show(
                &label,
                None,
                ORDERS,
                get("o-1"),
                Some(ReadLevel::Linearizable),
                None,
            )
            .await;
        let ok = matches!(&read, Ok((Answer::Strong(Some(v)), _)) if v.value == value.as_bytes());
        self.check("linearizable read sees it", ok, "");
        let (n1, n2) = (self.node(0)?, self.node(1)?);
        let label = format!("sadd {CARTS} {CART} espresso --write quorum --endpoint n1");
        let operation = sadd(CART, "espresso");
        let quorum = Some(WriteLevel::Quorum);
        let added = self
            .show(&label, Some(&n1.address), CARTS, operation, None, quorum)
            .await;
        let ok = matches!(added, Ok((Answer::Acknowledged { .. }, _)));
        self.check("eventual write acknowledged by a quorum", ok, "");
        let label = format!("smembers {CARTS} {CART} --read quorum --endpoint n2");
        let quorum_read = Some(ReadLevel::Quorum);
        let members = self
            .show(
                &label,
                Some(&n2.address),
                CARTS,
                get(CART),
                quorum_read,
                None,
            )
            .await;
        let ok = matches!(&members, Ok((answer, _))
            if set_members(answer).is_some_and(|m| m.contains("espresso")));
        self.check("quorum read on another node sees it", ok, "");
        if written.is_err() && added.is_err() {
            bail!("neither keyspace accepts writes");
        }
        Ok(())
    }

    async fn latency(&mut self) {
        self.heading(&format!(
            "latency per level ({LATENCY_OPS} sequential ops each)"
        ));
        let cases: [(&str, &str, Option<ReadLevel>, Option<WriteLevel>); 9] = [
            ("strong put", ORDERS, None, None),
            (
                "strong get linearizable",
                ORDERS,
                Some(ReadLevel::Linearizable),
                None,
            ),
            ("strong get lease", ORDERS, Some(ReadLevel::Lease), None),
            ("strong get stale", ORDERS, Some(ReadLevel::Stale), None),
            ("eventual sadd local", CARTS, None, Some(WriteLevel::Local)),
            (
                "eventual sadd quorum",
                CARTS,
                None,
                Some(WriteLevel::Quorum),
            ),
            ("eventual sadd all", CARTS, None, Some(WriteLevel::All)),
            (
                "eventual smembers local",
                CARTS,
                Some(ReadLevel::Local),
                None,
            ),
            (
                "eventual smembers quorum",
                CARTS,
                Some(ReadLevel::Quorum),
                None,
            ),
        ];
        let mut rows = Vec::new();
        for (label, keyspace, read, write) in cases {
            let mut row = LatencyRow {
                label: label.to_string(),
                ..LatencyRow::default()
            };
            let mut served = BTreeSet::new();
            for index in 0..LATENCY_OPS {
                let operation = match (keyspace, label.contains("put"), write) {
                    (ORDERS, true, _) => put(&format!("lat-{index}"), "x"),
                    (ORDERS, false, _) => get(&format!("lat-{index}")),
                    (_, _, Some(_)) => sadd("lat", &format!("item-{index}")),
                    _ => get("lat"),
                };
                let started = Instant::now();
                let result = self
                    .client
                    .execute(keyspace, operation, read, write, None)
                    .await;
                match result {
                    Ok((_, receipt)) => {
                        row.samples.push(started.elapsed());
                        served.insert(receipt.node.to_string());
                    }
                    Err(_) => row.errors += 1,
                }
            }
            row.served_by = served.into_iter().collect::<Vec<_>>().join(",");
            rows.push(row);
        }
        print!("{}", latency_table(&rows));
        let errors: usize = rows.iter().map(|row| row.errors).sum();
        self.check(
            "every timed operation succeeded",
            errors == 0,
            format!("{errors} errors"),
        );
    }

    /// Sets the same fault rules on every node.
    async fn set_faults(&mut self, name: &str, rules: FaultRules) -> bool {
        let mut failures = Vec::new();
        for node in self.cluster.nodes() {
            let deadline = Instant::now() + STEP_TIMEOUT;
            let request = || {
                self.client
                    .admin_at(&node.address, AdminRequest::SetFaults(rules.clone()))
            };
            if let Err(error) = retry_until(deadline, request).await {
                failures.push(format!("{}: {}", node.id, describe(&error)));
            }
        }
        let detail = if failures.is_empty() {
            "set on every node".to_string()
        } else {
            failures.join("; ")
        };
        self.check(name, failures.is_empty(), detail)
    }

    async fn partition(&mut self) -> anyhow::Result<()> {
        let n3 = self.node(2)?;
        self.heading(&format!("fault isolate {}", n3.id));
        let rules = FaultRules {
            rules: vec![FaultRule::Isolate { node: n3.id }],
        };
        if !self.set_faults(&format!("isolate {}", n3.id), rules).await {
            return Ok(());
        }
        self.wait_leaderless(n3).await;
        self.refused_on_minority(n3).await;
        self.written_on_majority().await;
        self.carts_on_both_sides().await
    }

    async fn wait_leaderless(&mut self, n3: &LocalNode) {
        let started = Instant::now();
        let deadline = started + STEP_TIMEOUT;
        loop {
            let status = node_status(self.client, &n3.address).await;
            let leaderless = status
                .as_ref()
                .ok()
                .and_then(orders_group)
                .is_some_and(|group| group.leader.is_none());
            if leaderless {
                let detail = format!("after {} ms", started.elapsed().as_millis());
                self.check(
                    &format!("{} knows no leader of {ORDERS}", n3.id),
                    true,
                    detail,
                );
                return;
            }
            if Instant::now() >= deadline {
                let detail = format!("still not after {STEP_TIMEOUT:?}: {status:?}");
                self.check(
                    &format!("{} knows no leader of {ORDERS}", n3.id),
                    false,
                    detail,
                );
                return;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// A write to `orders` pinned to the isolated node must fail with `Unavailable`. A
    /// `NotLeader` (it has not noticed yet) or a timeout means: ask again, until the deadline.
    async fn refused_on_minority(&mut self, n3: &LocalNode) {
        let name = format!("put {ORDERS} through {} fails with Unavailable", n3.id);
        let deadline = Instant::now() + STEP_TIMEOUT;
        let label = format!("put {ORDERS} o-3 \"refused?\" --endpoint {}", n3.id);
        loop {
            let started = Instant::now();
            let result = self
                .client
                .execute_at(
                    &n3.address,
                    ORDERS,
                    put("o-3", "refused?"),
                    None,
                    None,
                    None,
                )
                .await;
            let took = millis(started.elapsed());
            match result {
                Err(error) => match client_error(&error) {
                    Some(ClientError::Unavailable { reason }) => {
                        println!("  {label}  ->  error: unavailable: {reason}  ({took} ms)");
                        self.check(&name, true, format!("{reason}"));
                        return;
                    }
                    Some(ClientError::NotLeader { .. } | ClientError::Timeout { .. })
                        if Instant::now() < deadline =>
                    {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    _ => {
                        println!("  {label}  ->  error: {}  ({took} ms)", describe(&error));
                        self.check(&name, false, describe(&error));
                        return;
                    }
                },
                Ok((answer, _)) => {
                    let detail = format!("the minority accepted it: {}", describe_answer(&answer));
                    self.check(&name, false, detail);
                    return;
                }
            }
        }
    }

    /// The leader of `orders` on the majority side, as its first node reports it.
    async fn majority_leader(&self) -> Option<&'a LocalNode> {
        let n1 = self.cluster.nodes().first()?;
        let status = node_status(self.client, &n1.address).await.ok()?;
        let leader = orders_group(&status)?.leader?;
        let n3 = self.cluster.nodes().get(2)?;
        self.cluster
            .nodes()
            .iter()
            .find(|node| node.id == leader && node.id != n3.id)
    }

    async fn written_on_majority(&mut self) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let started = Instant::now();
        let name = format!("put {ORDERS} on the majority side commits");
        loop {
            if let Some(leader) = self.majority_leader().await {
                let label = format!(
                    "put {ORDERS} {PARTITION_ORDER} {PARTITION_ORDER_VALUE:?} --endpoint {}",
                    leader.id
                );
                let operation = put(PARTITION_ORDER, PARTITION_ORDER_VALUE);
                let result = self
                    .show(&label, Some(&leader.address), ORDERS, operation, None, None)
                    .await;
                if let Ok((Answer::Written { revision }, _)) = result {
                    let detail = format!(
                        "revision {} on leader {}, {} ms after the isolation was noticed",
                        revision.0,
                        leader.id,
                        started.elapsed().as_millis()
                    );
                    self.check(&name, true, detail);
                    return;
                }
            }
            if Instant::now() >= deadline {
                self.check(&name, false, format!("no commit within {STEP_TIMEOUT:?}"));
                return;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn carts_on_both_sides(&mut self) -> anyhow::Result<()> {
        let (n1, n3) = (self.node(0)?, self.node(2)?);
        let local = Some(WriteLevel::Local);
        let label = format!("sadd {CARTS} {CART} tea --endpoint {} (isolated)", n3.id);
        let on_n3 = self
            .show(
                &label,
                Some(&n3.address),
                CARTS,
                sadd(CART, "tea"),
                None,
                local,
            )
            .await;
        let ok = matches!(on_n3, Ok((Answer::Acknowledged { .. }, _)));
        self.check(&format!("{CARTS} accepts a write on {}", n3.id), ok, "");
        let quorum = Some(WriteLevel::Quorum);
        let label = format!(
            "sadd {CARTS} {CART} cake --write quorum --endpoint {}",
            n1.id
        );
        let on_n1 = self
            .show(
                &label,
                Some(&n1.address),
                CARTS,
                sadd(CART, "cake"),
                None,
                quorum,
            )
            .await;
        let ok = matches!(on_n1, Ok((Answer::Acknowledged { .. }, _)));
        self.check(&format!("{CARTS} accepts a write on {}", n1.id), ok, "");
        for node in [n1, n3] {
            let label = format!("smembers {CARTS} {CART} --endpoint {}", node.id);
            let _ = self
                .show(&label, Some(&node.address), CARTS, get(CART), None, None)
                .await;
        }
        Ok(())
    }

    async fn heal(&mut self) -> anyhow::Result<()> {
        self.heading("fault heal");
        if !self.set_faults("heal", FaultRules::default()).await {
            return Ok(());
        }
        let healed = Instant::now();
        self.carts_converge().await;
        self.orders_catch_up(healed).await
    }

    /// Each node's own view (local read) of the cart, or None if it did not answer.
    async fn cart_views(&self) -> Vec<Option<BTreeSet<String>>> {
        let mut views = Vec::new();
        for node in self.cluster.nodes() {
            let result = self
                .client
                .execute_at(
                    &node.address,
                    CARTS,
                    get(CART),
                    Some(ReadLevel::Local),
                    None,
                    None,
                )
                .await;
            views.push(result.ok().and_then(|(answer, _)| set_members(&answer)));
        }
        views
    }

    async fn carts_converge(&mut self) {
        let started = Instant::now();
        let deadline = started + STEP_TIMEOUT;
        let name = format!("{CARTS} converges to the same members on every node");
        loop {
            let views = self.cart_views().await;
            let first = views.first().cloned().flatten();
            let converged = first.as_ref().is_some_and(|members| {
                members.contains("tea")
                    && members.contains("cake")
                    && views.iter().all(|view| view.as_ref() == Some(members))
            });
            if converged {
                let members = first.unwrap_or_default();
                let list: Vec<&str> = members.iter().map(String::as_str).collect();
                println!(
                    "  smembers {CARTS} {CART} on every node: {{{}}}",
                    list.join(", ")
                );
                let detail = format!("in {} ms after heal", started.elapsed().as_millis());
                self.check(&name, true, detail);
                return;
            }
            if Instant::now() >= deadline {
                self.check(
                    &name,
                    false,
                    format!("views after {STEP_TIMEOUT:?}: {views:?}"),
                );
                return;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The applied index of `orders` on n3 and on the leader, once both are known.
    async fn applied_indexes(&self, n3: &LocalNode) -> Option<(LogIndex, LogIndex)> {
        let leader = self.majority_leader().await?;
        let leader_status = node_status(self.client, &leader.address).await.ok()?;
        let n3_status = node_status(self.client, &n3.address).await.ok()?;
        Some((
            orders_group(&n3_status)?.applied,
            orders_group(&leader_status)?.applied,
        ))
    }

    async fn orders_catch_up(&mut self, healed: Instant) -> anyhow::Result<()> {
        let n3 = self.node(2)?;
        let deadline = Instant::now() + STEP_TIMEOUT;
        let name = format!("{ORDERS} on {} catches up with the leader", n3.id);
        loop {
            let indexes = self.applied_indexes(n3).await;
            if let Some((on_n3, on_leader)) = indexes
                && on_n3 >= on_leader
            {
                let detail = format!(
                    "applied {} on {} (leader {}), {} ms after heal",
                    on_n3.0,
                    n3.id,
                    on_leader.0,
                    healed.elapsed().as_millis()
                );
                self.check(&name, true, detail);
                break;
            }
            if Instant::now() >= deadline {
                self.check(
                    &name,
                    false,
                    format!("last indexes (n3, leader): {indexes:?}"),
                );
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        let label = format!(
            "get {ORDERS} {PARTITION_ORDER} --read stale --endpoint {}",
            n3.id
        );
        let stale = Some(ReadLevel::Stale);
        let read = self
            .show(
                &label,
                Some(&n3.address),
                ORDERS,
                get(PARTITION_ORDER),
                stale,
                None,
            )
            .await;
        let ok = matches!(&read, Ok((Answer::Strong(Some(v)), _))
            if v.value == PARTITION_ORDER_VALUE.as_bytes());
        let detail = "shows the order written during the partition";
        self.check(&format!("stale read on {}", n3.id), ok, detail);
        Ok(())
    }
}
