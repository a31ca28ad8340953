//! A small store on the typed API: strong data where it must be exact, eventual data where
//! it must always be writable.
//!
//! | keyspace    | mode             | holds                         | written with              |
//! |-------------|------------------|-------------------------------|---------------------------|
//! | `inventory` | strong           | stock per item                | `cas` on the item's revision |
//! | `orders`    | strong           | one record per checkout       | `cas(..).expect_absent()` |
//! | `carts`     | eventual set     | the items in each buyer's cart | `add`, on the buyer's node |
//! | `views`     | eventual counter | page views per item           | `incr`, on the buyer's node |
//!
//! A rush of concurrent buyers (tokio tasks), each served by one node, buys more than there
//! is. In the middle of it one node is cut off from the others through the fault path. Its
//! buyers keep filling carts and counting views (eventual keyspaces take writes on every
//! side) but cannot check out (the strong keyspaces serve only the majority side): that is a
//! failed checkout, not an error. After the heal the example checks, and exits non-zero if
//! one fails:
//! - stock: for every item, sold + remaining = initial stock, and it never went negative;
//! - orders: exactly one order record per successful checkout;
//! - carts and views: every node holds the same carts and counts (read on each node
//!   locally, polled until they agree), with every acknowledged write in them.
//!
//! ```text
//! cargo run --release --example shop                            # its own 3-node cluster
//! cargo run --release --example shop -- --endpoint 127.0.0.1:7001 --certs certs
//! ```

mod common;

use anyhow::{Context, bail};
use capdial::client::typed::{CounterKeyspace, SetKeyspace, StrongKeyspace};
use capdial::client::{Client, ConnError, Resend};
use capdial::eventual::ValueType;
use capdial::protocol::{Answer, ClientError, KeyspaceMode};
use capdial::strong::Versioned;
use capdial::types::NodeId;
use clap::Parser;
use common::{Checks, Cluster, ClusterArgs, Node, SETTLE, poll};
use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Runs a rush of concurrent buyers against a store, cuts one node off in the middle, heals,
/// and checks the store's invariants.
///
/// Against an existing cluster (--endpoint, at least 3 nodes), the partition is made with
/// fault rules through the admin path (`capdial fault`), which takes a client certificate
/// with the admin role; with another certificate the example says so and runs without the
/// partition. Keys are tagged with the run, so runs do not meet.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
}

const ITEMS: [&str; 3] = ["book", "pen", "tea"];
const STOCK_INITIAL: u64 = 20;
/// 12 buyers x 8 checkouts = 96 tries for 60 items: the shop sells out.
const BUYERS: usize = 12;
const CHECKOUTS_PER_BUYER: usize = 8;
/// Checkouts done before the cut, and by the majority side during it.
const CUT_AFTER: usize = BUYERS * CHECKOUTS_PER_BUYER / 4;
const HEAL_AFTER: usize = BUYERS * CHECKOUTS_PER_BUYER / 4;
/// How long each phase of the rush may take at most.
const PHASE_MAX: Duration = Duration::from_secs(60);
/// A checkout that loses this many cas races in a row gives up.
const CAS_TRIES_MAX: usize = 50;
/// How often an unknown cas outcome is resent before the checkout counts it as unknown.
const RESENDS_MAX: usize = 5;
/// Pause between two tries of an order write that could not reach the leader.
const ORDER_RETRY_PAUSE: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let cluster = Cluster::open(&args.cluster).await?;
    cluster.need_nodes(3, "a majority side and a minority side")?;
    let shop = Shop::open(&cluster).await?;
    shop.stock_up().await?;

    let rush = Arc::new(Rush::new());
    let buyers = start_buyers(&cluster, &shop, &rush);
    partition_midway(&cluster, &shop, &rush).await?;
    let tallies = finish(buyers).await?;

    let mut checks = Checks::default();
    for tally in &tallies {
        tally.print_buyer();
    }
    let total = Tally::sum(&tallies);
    total.print();
    check_stock(&shop, &total, &mut checks).await?;
    check_orders(&shop, &total, &mut checks).await?;
    check_carts(&cluster, &shop, &tallies, &mut checks).await?;
    check_views(&cluster, &shop, &total, &mut checks).await?;
    Ok(checks.finish())
}

/// The store's keyspaces, through one client, and the tag of this run's keys.
#[derive(Clone)]
struct Shop {
    client: Client,
    inventory: StrongKeyspace,
    orders: StrongKeyspace,
    carts: SetKeyspace,
    views: CounterKeyspace,
    run: String,
}

impl Shop {
    async fn open(cluster: &Cluster) -> anyhow::Result<Shop> {
        for (name, mode) in [
            ("inventory", KeyspaceMode::Strong),
            ("orders", KeyspaceMode::Strong),
            ("carts", KeyspaceMode::Eventual(ValueType::Set)),
            ("views", KeyspaceMode::Eventual(ValueType::Counter)),
        ] {
            cluster.create_keyspace(name, mode).await?;
        }
        Ok(Shop::through(cluster.client().clone(), &common::run_id()))
    }

    /// The same store through `client` (a buyer's own session).
    fn through(client: Client, run: &str) -> Shop {
        Shop {
            inventory: client.strong("inventory"),
            orders: client.strong("orders"),
            carts: client.set("carts"),
            views: client.counter("views"),
            client,
            run: run.to_string(),
        }
    }

    fn item_key(&self, item: &str) -> String {
        format!("{}/{item}", self.run)
    }

    fn cart_key(&self, buyer: usize) -> String {
        format!("{}/buyer-{buyer}", self.run)
    }

    fn order_prefix(&self) -> String {
        format!("{}/order/", self.run)
    }

    /// Unique per checkout: a retried order write finds its own record instead of adding one.
    fn order_key(&self, buyer: usize, checkout: usize) -> String {
        format!("{}buyer-{buyer}-{checkout}", self.order_prefix())
    }

    async fn stock_up(&self) -> anyhow::Result<()> {
        for item in ITEMS {
            let written = self
                .inventory
                .put(self.item_key(item), STOCK_INITIAL.to_string());
            written.await?;
        }
        println!(
            "stock: {STOCK_INITIAL} of each of {ITEMS:?} (run {})",
            self.run
        );
        Ok(())
    }
}

/// What the buyers share with the main task: which node is cut off, and how far they got.
struct Rush {
    cut: watch::Sender<Option<NodeId>>,
    progress: watch::Sender<Progress>,
}

#[derive(Clone, Debug, Default)]
struct Progress {
    /// Checkouts tried, by every buyer.
    done: usize,
    /// Checkouts tried by buyers on the majority side while a node was cut off.
    done_by_majority_in_cut: usize,
    /// Buyers that finished, with their home node.
    finished: Vec<NodeId>,
}

impl Rush {
    fn new() -> Rush {
        Rush {
            cut: watch::Sender::new(None),
            progress: watch::Sender::new(Progress::default()),
        }
    }

    /// The fault rules cut traffic between nodes only: clients still reach every node. A
    /// buyer whose app server sits on the cut-off side would reach only that side, so while
    /// its node is cut off it asks that node only (`.at`).
    fn pin<'a>(&self, home: &'a Node) -> Option<&'a str> {
        (*self.cut.borrow() == Some(home.id)).then_some(home.endpoint.as_str())
    }

    fn checkout_done(&self, home: NodeId) {
        let cut = *self.cut.borrow();
        self.progress.send_modify(|progress| {
            progress.done += 1;
            if cut.is_some_and(|cut| cut != home) {
                progress.done_by_majority_in_cut += 1;
            }
        });
    }

    /// Waits (without polling) until `until` holds for the progress, at most `PHASE_MAX`.
    async fn wait(&self, what: &str, until: impl FnMut(&Progress) -> bool) -> anyhow::Result<()> {
        let mut progress = self.progress.subscribe();
        tokio::time::timeout(PHASE_MAX, progress.wait_for(until))
            .await
            .with_context(|| format!("waiting for {what}"))?
            .context("the rush ended")?;
        Ok(())
    }
}

type Buyers = tokio::task::JoinSet<anyhow::Result<Tally>>;

/// One task per buyer, each served by one node in turn, each with its own client session.
fn start_buyers(cluster: &Cluster, shop: &Shop, rush: &Arc<Rush>) -> Buyers {
    let mut buyers = Buyers::new();
    println!("rush: {BUYERS} buyers x {CHECKOUTS_PER_BUYER} checkouts, spread over every node");
    for buyer in 0..BUYERS {
        let home = cluster.nodes()[buyer % cluster.nodes().len()].clone();
        // A fork shares the connections but has its own session, and asks `home` first.
        let shop = Shop::through(shop.client.fork(Some(&home.endpoint)), &shop.run);
        let rush = Arc::clone(rush);
        buyers.spawn(async move { buy(&shop, &rush, buyer, home).await });
    }
    buyers
}

/// Cuts off a node that leads neither strong keyspace once a quarter of the checkouts are
/// done, and heals once the majority side did another quarter.
async fn partition_midway(cluster: &Cluster, shop: &Shop, rush: &Rush) -> anyhow::Result<()> {
    rush.wait("the first checkouts", |p| p.done >= CUT_AFTER)
        .await?;
    let minority = match cut_off_a_follower(cluster, rush).await {
        Ok(minority) => minority,
        // Against a running cluster, fault rules need a certificate with the admin role.
        Err(error) => {
            println!("skipping the partition: {error:#}");
            return Ok(());
        }
    };
    show_refusal(cluster, shop, minority).await?;
    let majority_buyers = (0..BUYERS)
        .filter(|b| cluster.nodes()[b % cluster.nodes().len()].id != minority)
        .count();
    rush.wait("the majority side's checkouts", |p| {
        let finished = p.finished.iter().filter(|home| **home != minority).count();
        p.done_by_majority_in_cut >= HEAL_AFTER || finished == majority_buyers
    })
    .await?;
    cluster.heal().await?;
    rush.cut.send_replace(None);
    println!(
        "heal after {} checkouts on the majority side during the cut",
        rush.progress.borrow().done_by_majority_in_cut
    );
    Ok(())
}

/// Partitions the cluster into a majority and one node that leads neither strong keyspace
/// (cutting off a leader would only add an election), and tells the buyers.
async fn cut_off_a_follower(cluster: &Cluster, rush: &Rush) -> anyhow::Result<NodeId> {
    let leaders = [
        cluster.leader("inventory").await?,
        cluster.leader("orders").await?,
    ];
    let ids = cluster.nodes().iter().map(|node| node.id);
    let minority = ids
        .clone()
        .find(|id| !leaders.contains(&Some(*id)))
        .context("3 nodes, 2 leaders: one node leads neither")?;
    let majority: Vec<NodeId> = ids.filter(|id| *id != minority).collect();
    cluster.partition(&[&majority, &[minority]]).await?;
    rush.cut.send_replace(Some(minority));
    let majority: Vec<String> = majority.iter().map(NodeId::to_string).collect();
    println!(
        "partition after {} checkouts: {} | {minority} (leaders: inventory {}, orders {})",
        rush.progress.borrow().done,
        majority.join(","),
        leader_name(leaders[0]),
        leader_name(leaders[1]),
    );
    Ok(minority)
}

/// Waits until the cut-off node refuses strong reads as unavailable, which it does once it
/// notices it has no majority (after an election timeout or so), and prints its reason.
async fn show_refusal(cluster: &Cluster, shop: &Shop, minority: NodeId) -> anyhow::Result<()> {
    let node = cluster
        .nodes()
        .iter()
        .find(|node| node.id == minority)
        .context("the cut-off node is a member")?;
    let key = shop.item_key(ITEMS[0]);
    let refusal = poll(SETTLE, "the cut-off node to refuse", async || {
        match shop.inventory.get(&key).at(&node.endpoint).await {
            Err(ConnError::Client(refusal @ ClientError::Unavailable { .. })) => Some(refusal),
            _ => None,
        }
    })
    .await?;
    println!("{minority} refuses strong reads now: {refusal}");
    Ok(())
}

fn leader_name(leader: Option<NodeId>) -> String {
    leader.map_or_else(|| "none".to_string(), |node| node.to_string())
}

async fn finish(mut buyers: Buyers) -> anyhow::Result<Vec<Tally>> {
    let mut tallies = Vec::new();
    while let Some(joined) = buyers.join_next().await {
        tallies.push(joined.context("a buyer task panicked")??);
    }
    tallies.sort_by_key(|tally| tally.buyer);
    Ok(tallies)
}

/// What one buyer did.
#[derive(Debug, Default)]
struct Tally {
    buyer: usize,
    home: Option<NodeId>,
    /// (item, order key) of every successful checkout.
    bought: Vec<(String, String)>,
    sold_out: usize,
    unavailable: usize,
    gave_up: usize,
    /// Checkouts whose cas may or may not have applied, even after resending it.
    unknown: usize,
    cas_conflicts: usize,
    /// Order writes that found the record of an earlier try: applied once under retry.
    order_retries: usize,
    views_acked: BTreeMap<String, i64>,
    views_failed: usize,
    cart_acked: BTreeSet<String>,
}

/// How one checkout ended.
enum Checkout {
    Bought,
    SoldOut,
    Unavailable(String),
    GaveUp,
    Unknown,
}

async fn buy(shop: &Shop, rush: &Rush, buyer: usize, home: Node) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        buyer,
        home: Some(home.id),
        ..Tally::default()
    };
    for checkout_number in 0..CHECKOUTS_PER_BUYER {
        let item = ITEMS[(buyer + checkout_number) % ITEMS.len()];
        browse(shop, &home, buyer, item, &mut tally).await;
        let pin = rush.pin(&home);
        match checkout(shop, &shop.item_key(item), pin, &mut tally).await? {
            Checkout::Bought => {
                let order = shop.order_key(buyer, checkout_number);
                let record = format!("{item} for buyer-{buyer}");
                record_order(shop, rush, &home, &order, &record, &mut tally).await?;
                tally.bought.push((item.to_string(), order));
            }
            Checkout::SoldOut => tally.sold_out += 1,
            Checkout::Unavailable(reason) => {
                let side = if pin.is_some() { ", cut off" } else { "" };
                println!(
                    "buyer {buyer} on {}{side}: checkout failed: {reason}",
                    home.id
                );
                tally.unavailable += 1;
            }
            Checkout::GaveUp => tally.gave_up += 1,
            Checkout::Unknown => tally.unknown += 1,
        }
        rush.checkout_done(home.id);
    }
    rush.progress
        .send_modify(|progress| progress.finished.push(home.id));
    Ok(tally)
}

/// A page view and an add to the cart, on the buyer's own node: eventual keyspaces take
/// writes on every node, on both sides of a partition. Only acknowledged ones are expected
/// after the heal.
async fn browse(shop: &Shop, home: &Node, buyer: usize, item: &str, tally: &mut Tally) {
    match shop
        .views
        .incr(shop.item_key(item), 1)
        .at(&home.endpoint)
        .await
    {
        Ok(_) => *tally.views_acked.entry(item.to_string()).or_default() += 1,
        Err(error) => {
            println!("buyer {buyer}: view not counted: {error}");
            tally.views_failed += 1;
        }
    }
    match shop
        .carts
        .add(shop.cart_key(buyer), [item])
        .at(&home.endpoint)
        .await
    {
        Ok(_) => {
            tally.cart_acked.insert(item.to_string());
        }
        Err(error) => println!("buyer {buyer}: cart add failed: {error}"),
    }
}

/// Takes one of `key` from stock: read the stock and its revision, then a cas that applies
/// only if the revision is still the one read. When another buyer got there first, the cas
/// fails and says what the stock is now; try again from there.
async fn checkout(
    shop: &Shop,
    key: &str,
    pin: Option<&str>,
    tally: &mut Tally,
) -> anyhow::Result<Checkout> {
    let get = shop.inventory.get(key);
    let read = match pin {
        Some(endpoint) => get.at(endpoint).await,
        None => get.await,
    };
    let mut current = match read {
        Ok(read) => read.value,
        Err(error) => return unavailable(error),
    };
    for _ in 0..CAS_TRIES_MAX {
        let Some(row) = current else {
            bail!("item {key} has no stock record");
        };
        let stock = stock_of(&row)?;
        if stock == 0 {
            return Ok(Checkout::SoldOut);
        }
        let cas = shop
            .inventory
            .cas(key)
            .expect(row.mod_revision)
            .put((stock - 1).to_string());
        let sent = match pin {
            Some(endpoint) => cas.at(endpoint).await,
            None => cas.await,
        };
        let (succeeded, now) = match sent {
            Ok(outcome) => (outcome.succeeded, outcome.current),
            // The cas may have applied: resend it under its own identity, so it applies at
            // most once in all and the answer says whether it did.
            Err(ConnError::Timeout {
                resend: Some(resend),
                ..
            }) => match settle(&shop.client, resend).await? {
                Some(settled) => settled,
                None => return Ok(Checkout::Unknown),
            },
            Err(error) if error.may_have_applied() => return Ok(Checkout::Unknown),
            Err(error) => return unavailable(error),
        };
        if succeeded {
            return Ok(Checkout::Bought);
        }
        tally.cas_conflicts += 1;
        current = now;
    }
    Ok(Checkout::GaveUp)
}

fn stock_of(row: &Versioned) -> anyhow::Result<u64> {
    let text = std::str::from_utf8(&row.value).context("stock is not text")?;
    text.parse()
        .with_context(|| format!("stock {text:?} is not a count of at least 0"))
}

/// Resends a cas whose outcome was unknown until the cluster answers it: `(succeeded, the
/// key now)`, or `None` if it still cannot say.
async fn settle(
    client: &Client,
    mut resend: Resend,
) -> anyhow::Result<Option<(bool, Option<Versioned>)>> {
    for _ in 0..RESENDS_MAX {
        match client.resend(resend).await {
            Ok((
                Answer::Cas {
                    succeeded, current, ..
                },
                _,
            )) => return Ok(Some((succeeded, current))),
            Ok((other, _)) => bail!("a cas was answered with {other:?}"),
            Err(ConnError::Timeout {
                resend: Some(next), ..
            }) => resend = next,
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}

/// A strong request refused because this side has no leader (or none it can reach) is a
/// failed checkout; anything else is a real error.
fn unavailable(error: ConnError) -> anyhow::Result<Checkout> {
    match &error {
        ConnError::Client(
            refusal @ (ClientError::Unavailable { .. } | ClientError::NotLeader { .. }),
        ) => Ok(Checkout::Unavailable(refusal.to_string())),
        ConnError::Timeout {
            may_have_applied: false,
            ..
        } => Ok(Checkout::Unavailable(error.to_string())),
        _ => Err(error).context("checkout"),
    }
}

/// Writes the order record of a successful checkout, once. The key is unique to the checkout
/// and the write is create-only, so a retry after an unknown outcome finds the record an
/// earlier try wrote instead of writing a second one. A buyer cut off from the leader keeps
/// trying until the heal (bounded by `PHASE_MAX`).
async fn record_order(
    shop: &Shop,
    rush: &Rush,
    home: &Node,
    order: &str,
    record: &str,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PHASE_MAX;
    let mut tries = 0;
    loop {
        tries += 1;
        let cas = shop.orders.cas(order).expect_absent().put(record);
        let sent = match rush.pin(home) {
            Some(endpoint) => cas.at(endpoint).await,
            None => cas.await,
        };
        let error = match sent {
            Ok(outcome) if outcome.succeeded => return Ok(()),
            Ok(outcome) => match outcome.current {
                Some(row) if row.value == record.as_bytes() => {
                    tally.order_retries += 1;
                    return Ok(());
                }
                other => bail!("order {order} holds {other:?}, not this checkout's record"),
            },
            Err(error) => error,
        };
        let retryable = error.may_have_applied() || unavailable_reason(&error);
        if !retryable || Instant::now() >= deadline {
            return Err(error).with_context(|| format!("writing order {order} (try {tries})"));
        }
        if tries == 1 {
            println!("order {order} waits for the leader: {error}");
        }
        tokio::time::sleep(ORDER_RETRY_PAUSE).await;
    }
}

fn unavailable_reason(error: &ConnError) -> bool {
    matches!(
        error,
        ConnError::Client(ClientError::Unavailable { .. } | ClientError::NotLeader { .. })
            | ConnError::Timeout { .. }
    )
}

impl Tally {
    fn sum(tallies: &[Tally]) -> Tally {
        let mut total = Tally::default();
        for tally in tallies {
            total.bought.extend(tally.bought.iter().cloned());
            total.sold_out += tally.sold_out;
            total.unavailable += tally.unavailable;
            total.gave_up += tally.gave_up;
            total.unknown += tally.unknown;
            total.cas_conflicts += tally.cas_conflicts;
            total.order_retries += tally.order_retries;
            total.views_failed += tally.views_failed;
            for (item, count) in &tally.views_acked {
                *total.views_acked.entry(item.clone()).or_default() += count;
            }
        }
        total
    }

    fn print_buyer(&self) {
        let home = self.home.map(|node| node.to_string()).unwrap_or_default();
        println!(
            "buyer {:>2} on {home}: bought {}, sold out {}, unavailable {}, cas conflicts {}",
            self.buyer,
            self.bought.len(),
            self.sold_out,
            self.unavailable,
            self.cas_conflicts
        );
    }

    fn print(&self) {
        let tries =
            self.bought.len() + self.sold_out + self.unavailable + self.gave_up + self.unknown;
        println!(
            "checkouts: attempts={tries} ok={} sold_out={} unavailable={} gave_up={} unknown={}",
            self.bought.len(),
            self.sold_out,
            self.unavailable,
            self.gave_up,
            self.unknown
        );
        println!(
            "  {} cas conflicts retried, {} order writes found their earlier try",
            self.cas_conflicts, self.order_retries
        );
    }
}

/// Sold (successful checkouts) + remaining (read linearizably) = initial, for every item.
async fn check_stock(shop: &Shop, total: &Tally, checks: &mut Checks) -> anyhow::Result<()> {
    let mut held = total.unknown == 0;
    let mut lines = Vec::new();
    for item in ITEMS {
        let row = shop
            .inventory
            .get(shop.item_key(item))
            .await?
            .value
            .context("stock record")?;
        let remaining = stock_of(&row);
        let sold = total
            .bought
            .iter()
            .filter(|(bought, _)| bought == item)
            .count() as u64;
        match remaining {
            Ok(remaining) => {
                held &= sold + remaining == STOCK_INITIAL;
                lines.push(format!(
                    "{item} sold {sold} + remaining {remaining} = {}",
                    sold + remaining
                ));
            }
            Err(error) => {
                held = false;
                lines.push(format!("{item}: {error:#}"));
            }
        }
    }
    let detail = format!(
        "{}; initial {STOCK_INITIAL} each; {} unknown outcomes",
        lines.join("; "),
        total.unknown
    );
    checks.check("stock", held, detail);
    Ok(())
}

/// One order record per successful checkout: the same keys, no more, no fewer.
async fn check_orders(shop: &Shop, total: &Tally, checks: &mut Checks) -> anyhow::Result<()> {
    let scanned = shop.orders.scan(shop.order_prefix()).await?;
    let recorded: BTreeSet<Vec<u8>> = scanned
        .entries
        .iter()
        .map(|(key, _)| key.to_vec())
        .collect();
    let expected: BTreeSet<Vec<u8>> = total
        .bought
        .iter()
        .map(|(_, order)| order.as_bytes().to_vec())
        .collect();
    let held = recorded == expected && expected.len() == total.bought.len();
    let detail = format!(
        "{} order records for {} successful checkouts",
        recorded.len(),
        total.bought.len()
    );
    checks.check("orders", held, detail);
    Ok(())
}

/// Every node holds the same carts after the heal, each with every acknowledged add.
async fn check_carts(
    cluster: &Cluster,
    shop: &Shop,
    tallies: &[Tally],
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let agreed = poll(SETTLE, "carts to agree on every node", async || {
        let mut views = Vec::new();
        for node in cluster.nodes() {
            views.push(carts_on(shop, node, tallies).await?);
        }
        let complete = tallies
            .iter()
            .zip(&views[0])
            .all(|(tally, cart)| cart.is_superset(&tally.cart_acked));
        (views.iter().all(|view| *view == views[0]) && complete).then(|| views.swap_remove(0))
    })
    .await;
    let detail = match &agreed {
        Ok(carts) => format!(
            "{} carts, {} items in all, equal on {} nodes (agreed within {:.1?})",
            carts.len(),
            carts.iter().map(BTreeSet::len).sum::<usize>(),
            cluster.nodes().len(),
            started.elapsed()
        ),
        Err(error) => format!("{error:#}"),
    };
    checks.check("carts", agreed.is_ok(), detail);
    Ok(())
}

/// Every buyer's cart as `node` holds it: a local read of that node only.
async fn carts_on(shop: &Shop, node: &Node, tallies: &[Tally]) -> Option<Vec<BTreeSet<String>>> {
    let mut carts = Vec::new();
    for tally in tallies {
        let read = shop
            .carts
            .members(shop.cart_key(tally.buyer))
            .local()
            .at(&node.endpoint)
            .await
            .ok()?;
        carts.push(
            read.value
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect(),
        );
    }
    Some(carts)
}

/// Every node counts the same views after the heal: every acknowledged increment, and at
/// most the ones whose acknowledgement was lost on top.
async fn check_views(
    cluster: &Cluster,
    shop: &Shop,
    total: &Tally,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let acked: i64 = total.views_acked.values().sum();
    let failed = total.views_failed as i64;
    let agreed = poll(SETTLE, "views to agree on every node", async || {
        // Each node's count per item.
        let mut counts: Vec<Vec<i64>> = Vec::new();
        for node in cluster.nodes() {
            let mut on_node = Vec::new();
            for item in ITEMS {
                let key = shop.item_key(item);
                let read = shop.views.get(key).local().at(&node.endpoint).await.ok()?;
                on_node.push(read.value);
            }
            counts.push(on_node);
        }
        let equal = counts.iter().all(|on_node| *on_node == counts[0]);
        let sum: i64 = counts[0].iter().sum();
        (equal && (acked..=acked + failed).contains(&sum)).then_some(sum)
    })
    .await;
    let detail = match &agreed {
        Ok(count) => format!(
            "{count} views ({acked} acknowledged) on each of {} nodes (agreed within {:.1?})",
            cluster.nodes().len(),
            started.elapsed()
        ),
        Err(error) => format!("{error:#}"),
    };
    checks.check("views", agreed.is_ok(), detail);
    Ok(())
}
