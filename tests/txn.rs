//! Transactions against a real 3-node `LocalCluster`: concurrent buyers take stock and record
//! their order in one transaction while the keyspace's leader is killed, and the stock always
//! equals what was not ordered, within one keyspace and across two (two-phase commit, with
//! the leader of one of them killed); a watch sees each transaction's changes at one
//! revision; `capdial txn` runs one from clauses, on one keyspace and across two.

mod common;

use capdial::Client;
use capdial::client::typed::StrongKeyspace;
use capdial::protocol::{KeyspaceMode, WatchEvent};
use capdial::types::LogIndex;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const STOCK: u32 = 12;
const BUYERS: u32 = 4;
const DEADLINE: Duration = Duration::from_secs(90);

/// Buys one pen: reads the stock, then takes one and records the order in one transaction
/// that holds only if the stock is unchanged and the order not yet recorded (so an attempt
/// whose outcome was lost with the leader can never be applied twice); retries until the
/// order is recorded. `false`: sold out.
async fn buy(shop: &StrongKeyspace, order: &str) -> bool {
    let order = format!("order/{order}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "{order} never got an answer");
        let (Ok(stock), Ok(recorded)) = (shop.get("stock/pen").await, shop.get(&order).await)
        else {
            continue; // A lost leader: read again.
        };
        if recorded.value.is_some() {
            return true; // An earlier attempt applied.
        }
        let row = stock.value.expect("stock is written first");
        let left: u32 = std::str::from_utf8(&row.value).unwrap().parse().unwrap();
        if left == 0 {
            return false;
        }
        let sold = shop
            .txn()
            .if_revision("stock/pen", row.mod_revision)
            .if_absent(order.clone())
            .then_put("stock/pen", (left - 1).to_string())
            .then_put(order.clone(), "pen")
            .await;
        if sold.is_ok_and(|outcome| outcome.succeeded) {
            return true;
        }
        // Someone bought meanwhile, or the outcome is unknown: the next round reads again.
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buyers_take_stock_and_record_orders_atomically_across_a_leader_kill() {
    let cluster = common::local_cluster().await;
    cluster
        .create_keyspace("shop", KeyspaceMode::Strong)
        .await
        .expect("create shop");
    let shop = cluster.client().strong("shop");
    let start = shop
        .put("stock/pen", STOCK.to_string())
        .await
        .expect("stock")
        .revision;
    let buyers: Vec<_> = (0..BUYERS)
        .map(|buyer| {
            let shop = shop.clone();
            tokio::spawn(async move {
                let mut bought = 0;
                for i in 0.. {
                    if !buy(&shop, &format!("b{buyer}-{i}")).await {
                        return bought;
                    }
                    bought += 1;
                }
                unreachable!()
            })
        })
        .collect();
    // Kill the leader once a third of the stock is gone.
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "nothing was bought");
        let orders = shop.scan("order/").await.map(|s| s.entries.len());
        if orders.is_ok_and(|n| n >= (STOCK / 3) as usize) {
            break;
        }
    }
    let leader = cluster
        .leader("shop")
        .await
        .expect("lookup")
        .expect("a leader");
    cluster.kill(leader).expect("kill the leader");
    let mut bought = 0;
    for buyer in buyers {
        bought += buyer.await.expect("buyer");
    }
    let orders = shop.scan("order/").await.expect("scan orders").entries;
    let left = shop
        .get("stock/pen")
        .await
        .expect("stock")
        .value
        .expect("there");
    assert_eq!(left.value, "0", "sold out");
    assert_eq!(
        orders.len() as u32,
        STOCK,
        "one order per pen sold: {orders:?}"
    );
    assert!(bought <= STOCK, "no buyer counts a pen twice: {bought}");

    // A watch from the start sees every sale as its two changes at one revision.
    let mut watch = shop.watch("").from_revision(LogIndex(start.0 + 1));
    let mut by_revision: BTreeMap<LogIndex, Vec<String>> = BTreeMap::new();
    while by_revision.values().map(Vec::len).sum::<usize>() < 2 * STOCK as usize {
        let event = watch.next().await.expect("watch");
        let WatchEvent::Put { key, value } = event else {
            panic!("only puts were made: {event:?}");
        };
        let key = String::from_utf8_lossy(&key).into_owned();
        by_revision.entry(value.mod_revision).or_default().push(key);
    }
    assert_eq!(by_revision.len(), STOCK as usize);
    for (revision, keys) in by_revision {
        assert_eq!(keys.len(), 2, "revision {}: {keys:?}", revision.0);
        assert_eq!(keys[0], "stock/pen", "in the transaction's order: {keys:?}");
        assert!(keys[1].starts_with("order/"), "{keys:?}");
    }
}

#[test]
fn capdial_txn_runs_the_branch_its_compares_pick() {
    let runtime = common::runtime();
    let cluster = runtime.block_on(common::local_cluster());
    let stock = runtime.block_on(async {
        cluster
            .create_keyspace("inventory", KeyspaceMode::Strong)
            .await
            .expect("create inventory");
        let inventory = cluster.client().strong("inventory");
        inventory.put("item-1", "5").await.expect("put").revision
    });
    let txn = |clauses: &[String]| {
        let args = std::iter::once("txn").chain(clauses.iter().map(String::as_str));
        common::capdial_cli(&cluster, args)
    };
    let clauses = [
        "--if".to_string(),
        format!("inventory item-1 rev={}", stock.0),
        "--then".to_string(),
        "put inventory item-1 4".to_string(),
        "--then".to_string(),
        "put inventory order/o-9 paid".to_string(),
        "--else".to_string(),
        "put inventory audit/o-9 stock moved".to_string(),
    ];
    let first = txn(&clauses);
    assert!(first.starts_with("OK: the compares held"), "{first}");
    let second = txn(&clauses);
    assert!(second.starts_with("the compares failed"), "{second}");
    let read = runtime.block_on(async {
        let inventory = cluster.client().strong("inventory");
        let mut values = Vec::new();
        for key in ["item-1", "order/o-9", "audit/o-9"] {
            let row = inventory.get(key).await.expect("get").value;
            values.push(row.map(|row| String::from_utf8_lossy(&row.value).into_owned()));
        }
        values
    });
    let expected = ["4", "paid", "stock moved"].map(|v| Some(v.to_string()));
    assert_eq!(read, expected);
}

/// Buys one pen across keyspaces: reads the stock in `inventory`, then in one transaction
/// takes one there and records the order in `orders`, only if the stock is unchanged and
/// the order not yet recorded; retries until the order is recorded. `false`: sold out.
async fn buy_across(client: &Client, order: &str) -> bool {
    let (inventory, orders) = (client.strong("inventory"), client.strong("orders"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "{order} never got an answer");
        let (Ok(stock), Ok(recorded)) = (inventory.get("pen").await, orders.get(order).await)
        else {
            continue; // A lost leader, or a key held past the timeout: read again.
        };
        if recorded.value.is_some() {
            return true; // An earlier attempt committed.
        }
        let row = stock.value.expect("stock is written first");
        let left: u32 = std::str::from_utf8(&row.value).unwrap().parse().unwrap();
        if left == 0 {
            return false;
        }
        let sold = client
            .transaction()
            .if_revision("inventory", "pen", row.mod_revision)
            .if_absent("orders", order)
            .then_put("inventory", "pen", (left - 1).to_string())
            .then_put("orders", order, "pen")
            .await;
        if sold.is_ok_and(|outcome| outcome.succeeded) {
            return true;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_across_keyspaces_moves_stock_and_writes_the_order_across_a_leader_kill() {
    let cluster = common::local_cluster().await;
    for name in ["inventory", "orders"] {
        cluster
            .create_keyspace(name, KeyspaceMode::Strong)
            .await
            .expect("create");
    }
    let client = cluster.client();
    client
        .strong("inventory")
        .put("pen", STOCK.to_string())
        .await
        .expect("stock");
    let buyers: Vec<_> = (0..BUYERS)
        .map(|buyer| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut bought = 0;
                for i in 0.. {
                    if !buy_across(&client, &format!("b{buyer}-{i}")).await {
                        return bought;
                    }
                    bought += 1;
                }
                unreachable!()
            })
        })
        .collect();
    // Kill the leader of `orders` (not the anchor, which is `inventory`) once a third of the
    // stock is gone, with transactions in flight.
    let orders = client.strong("orders");
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "nothing was bought");
        let sold = orders.scan("").await.map(|s| s.entries.len());
        if sold.is_ok_and(|n| n >= (STOCK / 3) as usize) {
            break;
        }
    }
    let leader = cluster.leader("orders").await.expect("lookup");
    cluster
        .kill(leader.expect("a leader"))
        .expect("kill the leader");
    let mut bought = 0;
    for buyer in buyers {
        bought += buyer.await.expect("buyer");
    }
    let recorded = orders.scan("").await.expect("scan orders").entries;
    let left = client.strong("inventory").get("pen").await.expect("stock");
    assert_eq!(left.value.expect("there").value, "0", "sold out");
    assert_eq!(
        recorded.len() as u32,
        STOCK,
        "one order per pen: {recorded:?}"
    );
    assert!(bought <= STOCK, "no buyer counts a pen twice: {bought}");
}

#[test]
fn capdial_txn_across_keyspaces_commits_on_both() {
    let runtime = common::runtime();
    let cluster = runtime.block_on(common::local_cluster());
    let stock = runtime.block_on(async {
        for name in ["inventory", "orders"] {
            cluster
                .create_keyspace(name, KeyspaceMode::Strong)
                .await
                .expect("create");
        }
        let inventory = cluster.client().strong("inventory");
        inventory.put("item-1", "5").await.expect("put").revision
    });
    let clauses = [
        "txn".to_string(),
        "--if".to_string(),
        format!("inventory item-1 rev={}", stock.0),
        "--then".to_string(),
        "put inventory item-1 4".to_string(),
        "--then".to_string(),
        "put orders o-9 paid".to_string(),
        "--else".to_string(),
        "put orders audit/o-9 stock moved".to_string(),
    ];
    let first = common::capdial_cli(&cluster, clauses.iter().map(String::as_str));
    assert!(first.starts_with("OK: the compares held"), "{first}");
    assert!(first.contains("inventory at revision") && first.contains("orders at revision"));
    let second = common::capdial_cli(&cluster, clauses.iter().map(String::as_str));
    assert!(second.starts_with("the compares failed"), "{second}");
    let read = runtime.block_on(async {
        let client = cluster.client();
        let mut values = Vec::new();
        for (keyspace, key) in [
            ("inventory", "item-1"),
            ("orders", "o-9"),
            ("orders", "audit/o-9"),
        ] {
            let row = client.strong(keyspace).get(key).await.expect("get").value;
            values.push(row.map(|row| String::from_utf8_lossy(&row.value).into_owned()));
        }
        values
    });
    let expected = ["4", "paid", "stock moved"].map(|v| Some(v.to_string()));
    assert_eq!(read, expected);
}
