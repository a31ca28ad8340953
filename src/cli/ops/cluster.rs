//! The cluster commands: `keyspace`, `member`, `fault` and `status`.

use super::parse;
use super::{ConnArgs, OpsCommand, Run, UsageError};
use crate::client::conn::{Client, ConnError};
use crate::eventual::ValueType;
use crate::net::faults::{FaultRule, FaultRules};
use crate::protocol::KeyspaceMode;
use crate::protocol::admin::{AdminAnswer, AdminRequest, EventualStatus, GroupStatus, NodeStatus};
use crate::types::NodeId;
use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

/// How long `status` and `fault list` wait for one node.
const READ_WAIT_MAX: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Args)]
pub struct KeyspaceArgs {
    #[command(subcommand)]
    pub command: KeyspaceCommand,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Where a new keyspace sits on the dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Raft, linearizable; unavailable on the minority side of a partition
    Strong,
    /// CRDT values, writes accepted on every node, converging
    Eventual,
    /// Leaderless per-key Paxos, linearizable; no election pause when a node is lost
    Paxos,
}

/// The value type of an eventual keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// Last writer wins
    Lww,
    /// Multi-value register: concurrent writes kept as siblings
    Mvreg,
    /// Counter (incr, decr)
    Counter,
    /// Set of members (sadd, srem, smembers)
    Set,
}

#[derive(Clone, Debug, Subcommand)]
pub enum KeyspaceCommand {
    /// Create a keyspace
    Create {
        /// Name
        name: String,
        /// strong, eventual or paxos
        #[arg(long, value_enum)]
        mode: ModeArg,
        /// Value type of an eventual keyspace (default: lww)
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        value_type: Option<TypeArg>,
    },
    /// List the keyspaces
    List,
    /// Drop a keyspace and its data on every node
    Drop {
        /// Name
        name: String,
    },
}

#[derive(Clone, Debug, Args)]
pub struct MemberArgs {
    #[command(subcommand)]
    pub command: MemberCommand,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Clone, Debug, Subcommand)]
pub enum MemberCommand {
    /// Add a voting member (start it with `capdial node --join` and an --initial-cluster naming it)
    Add {
        /// Node id, like n4
        #[arg(value_parser = parse::node_id)]
        id: NodeId,
        /// Its address, HOST:PORT
        address: String,
    },
    /// Remove a member
    Remove {
        /// Node id
        #[arg(value_parser = parse::node_id)]
        id: NodeId,
    },
    /// List the members and their addresses
    List,
}

#[derive(Clone, Debug, Args)]
pub struct FaultArgs {
    #[command(subcommand)]
    pub command: FaultCommand,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Clone, Debug, Subcommand)]
pub enum FaultCommand {
    /// Split the nodes into sides that cannot reach each other: `partition n1,n2 n3`
    Partition {
        /// Two or more sides, each a comma-separated list of node ids
        #[arg(required = true, num_args = 2.., value_parser = parse::node_list, value_name = "SIDE")]
        sides: Vec<Vec<NodeId>>,
    },
    /// Cut one node off from every other
    Isolate {
        /// Node id, like n3
        #[arg(value_parser = parse::node_id)]
        node: NodeId,
    },
    /// Lose every message from one node to another (one way)
    Cut {
        /// Sending node
        #[arg(value_parser = parse::node_id)]
        from: NodeId,
        /// Receiving node
        #[arg(value_parser = parse::node_id)]
        to: NodeId,
    },
    /// Delay messages between two nodes, both ways: `delay n1 n2 50ms --jitter 10ms`
    Delay {
        /// One node
        #[arg(value_parser = parse::node_id)]
        a: NodeId,
        /// The other node
        #[arg(value_parser = parse::node_id)]
        b: NodeId,
        /// Added delay, like 50ms
        #[arg(value_parser = parse::duration)]
        delay: Duration,
        /// Up to this much more, drawn per message
        #[arg(long, default_value = "0ms", value_parser = parse::duration)]
        jitter: Duration,
    },
    /// Lose a share of the messages between two nodes, both ways: `loss n1 n2 20%`
    Loss {
        /// One node
        #[arg(value_parser = parse::node_id)]
        a: NodeId,
        /// The other node
        #[arg(value_parser = parse::node_id)]
        b: NodeId,
        /// Share lost, like 20%
        #[arg(value_parser = parse::percent)]
        percent: u8,
    },
    /// Remove every fault rule on every member
    Heal,
    /// The rules in force on each member
    List,
}

#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    /// Refresh until Ctrl-C
    #[arg(long)]
    pub watch: bool,
    /// Time between refreshes with --watch
    #[arg(long, default_value = "1s", value_parser = parse::duration)]
    pub interval: Duration,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// The catalog mode of `keyspace create` flags.
pub fn keyspace_mode(
    mode: ModeArg,
    value_type: Option<TypeArg>,
) -> Result<KeyspaceMode, UsageError> {
    Ok(match (mode, value_type) {
        (ModeArg::Strong, None) => KeyspaceMode::Strong,
        (ModeArg::Strong, Some(_)) => {
            return Err(UsageError(
                "--type applies to eventual keyspaces only: a strong keyspace holds bytes".into(),
            ));
        }
        (ModeArg::Paxos, None) => KeyspaceMode::Paxos,
        (ModeArg::Paxos, Some(_)) => {
            return Err(UsageError(
                "--type applies to eventual keyspaces only: a paxos keyspace holds bytes".into(),
            ));
        }
        (ModeArg::Eventual, value_type) => KeyspaceMode::Eventual(match value_type {
            None | Some(TypeArg::Lww) => ValueType::Lww,
            Some(TypeArg::Mvreg) => ValueType::MvReg,
            Some(TypeArg::Counter) => ValueType::Counter,
            Some(TypeArg::Set) => ValueType::Set,
        }),
    })
}

/// The rule a fault command adds; `None` for `heal` and `list`. Checked with the rule's own
/// validation, so the CLI refuses what a node would refuse.
pub fn fault_rule(command: &FaultCommand) -> Result<Option<FaultRule>, UsageError> {
    let rule = match command {
        FaultCommand::Partition { sides } => FaultRule::Partition {
            sides: sides.clone(),
        },
        FaultCommand::Isolate { node } => FaultRule::Isolate { node: *node },
        FaultCommand::Cut { from, to } => FaultRule::Cut {
            from: *from,
            to: *to,
        },
        FaultCommand::Delay {
            a,
            b,
            delay,
            jitter,
        } => FaultRule::Delay {
            a: *a,
            b: *b,
            delay: *delay,
            jitter: *jitter,
        },
        FaultCommand::Loss { a, b, percent } => FaultRule::Loss {
            a: *a,
            b: *b,
            percent: *percent,
        },
        FaultCommand::Heal | FaultCommand::List => return Ok(None),
    };
    rule.validate()
        .map_err(|error| UsageError(format!("invalid fault rule: {error}")))?;
    Ok(Some(rule))
}

/// The rules after adding `rule` to `current`: the union, without duplicates.
pub fn with_rule(current: &FaultRules, rule: FaultRule) -> Result<FaultRules, UsageError> {
    let mut rules = current.clone();
    if !rules.rules.contains(&rule) {
        rules
            .add(rule)
            .map_err(|error| UsageError(format!("invalid fault rule: {error}")))?;
    }
    Ok(rules)
}

/// Runs an admin command.
pub async fn execute(
    client: &Client,
    command: &OpsCommand,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        OpsCommand::Keyspace(args) => keyspace(client, &args.command, run, out).await,
        OpsCommand::Member(args) => member(client, &args.command, run, out).await,
        OpsCommand::Fault(args) => fault(client, &args.command, run, out).await,
        OpsCommand::Status(args) => status(client, args, run, out).await,
        _ => bail!("not an admin command"),
    }
}

async fn admin(
    client: &Client,
    run: &Run,
    request: AdminRequest,
) -> Result<AdminAnswer, ConnError> {
    match &run.pinned {
        Some(endpoint) => client.admin_at(endpoint, request).await,
        None => client.admin(request).await,
    }
}

fn unexpected(answer: &AdminAnswer) -> anyhow::Error {
    anyhow::anyhow!("the node answered with something else: {answer:?}")
}

fn print(
    out: &mut (dyn Write + Send),
    run: &Run,
    text: &str,
    object: Value,
) -> std::io::Result<()> {
    if run.json {
        writeln!(out, "{object}")
    } else {
        writeln!(out, "{text}")
    }
}

async fn keyspace(
    client: &Client,
    command: &KeyspaceCommand,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        KeyspaceCommand::Create {
            name,
            mode,
            value_type,
        } => {
            let mode = keyspace_mode(*mode, *value_type)?;
            let request = AdminRequest::CreateKeyspace {
                name: name.clone(),
                mode,
            };
            admin(client, run, request).await?;
            let object = json!({ "ok": true, "created": name, "mode": mode.to_string() });
            print(
                out,
                run,
                &format!("created keyspace {name} ({mode})"),
                object,
            )?;
        }
        KeyspaceCommand::Drop { name } => {
            let request = AdminRequest::DropKeyspace { name: name.clone() };
            admin(client, run, request).await?;
            let object = json!({ "ok": true, "dropped": name });
            print(out, run, &format!("dropped keyspace {name}"), object)?;
        }
        KeyspaceCommand::List => {
            let answer = admin(client, run, AdminRequest::ListKeyspaces).await?;
            let AdminAnswer::Keyspaces(list) = answer else {
                return Err(unexpected(&answer));
            };
            if run.json {
                let list: Vec<Value> = list
                    .iter()
                    .map(|k| json!({ "name": k.name, "id": k.id.0, "mode": k.mode.to_string() }))
                    .collect();
                writeln!(out, "{}", json!({ "ok": true, "keyspaces": list }))?;
            } else if list.is_empty() {
                writeln!(out, "(no keyspaces)")?;
            } else {
                for k in &list {
                    writeln!(out, "{:<24} {}", k.name, k.mode)?;
                }
            }
        }
    }
    Ok(())
}

async fn member(
    client: &Client,
    command: &MemberCommand,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    match command {
        MemberCommand::Add { id, address } => {
            let request = AdminRequest::AddMember {
                id: *id,
                address: address.clone(),
            };
            admin(client, run, request).await?;
            let object = json!({ "ok": true, "added": id.to_string(), "address": address });
            print(out, run, &format!("added {id} at {address}"), object)?;
        }
        MemberCommand::Remove { id } => {
            admin(client, run, AdminRequest::RemoveMember { id: *id }).await?;
            let object = json!({ "ok": true, "removed": id.to_string() });
            print(out, run, &format!("removed {id}"), object)?;
        }
        MemberCommand::List => {
            let answer = admin(client, run, AdminRequest::Members).await?;
            let AdminAnswer::Members(members) = answer else {
                return Err(unexpected(&answer));
            };
            if run.json {
                let list: Vec<Value> = members
                    .iter()
                    .map(|m| json!({ "id": m.id.to_string(), "address": m.address }))
                    .collect();
                writeln!(out, "{}", json!({ "ok": true, "members": list }))?;
            } else {
                for m in &members {
                    writeln!(out, "{:<6} {}", m.id.to_string(), m.address)?;
                }
            }
        }
    }
    Ok(())
}

/// Asks every member the same admin request, concurrently; each answer or error by member.
async fn ask_all(
    client: &Client,
    request: AdminRequest,
) -> anyhow::Result<Vec<(NodeId, String, Result<AdminAnswer, ConnError>)>> {
    let mut members = client.members().await.context("listing the members")?;
    members.sort_by_key(|m| m.id);
    let mut tasks = tokio::task::JoinSet::new();
    for (index, member) in members.iter().enumerate() {
        let (client, request, address) = (client.clone(), request.clone(), member.address.clone());
        tasks.spawn(async move {
            // Reading state need not wait the whole request deadline for a node that is down.
            let wait = match request {
                AdminRequest::Status | AdminRequest::Faults => {
                    client.options().timeout.min(READ_WAIT_MAX)
                }
                _ => client.options().timeout,
            };
            let answer = tokio::time::timeout(wait, client.admin_at(&address, request)).await;
            let answer = answer.unwrap_or(Err(ConnError::Timeout {
                may_have_applied: false,
                resend: None,
            }));
            (index, answer)
        });
    }
    let mut answers: Vec<Option<Result<AdminAnswer, ConnError>>> =
        members.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, answer) = joined.context("a status task failed")?;
        answers[index] = Some(answer);
    }
    Ok(members
        .into_iter()
        .zip(answers)
        .map(|(m, answer)| {
            let answer = answer.unwrap_or(Err(ConnError::Timeout {
                may_have_applied: false,
                resend: None,
            }));
            (m.id, m.address, answer)
        })
        .collect())
}

fn rules_text(rules: &FaultRules) -> String {
    if rules.rules.is_empty() {
        return "none".to_string();
    }
    let list: Vec<String> = rules.rules.iter().map(ToString::to_string).collect();
    list.join("; ")
}

async fn fault(
    client: &Client,
    command: &FaultCommand,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if matches!(command, FaultCommand::List) {
        return fault_list(client, run, out).await;
    }
    let rules = match fault_rule(command)? {
        None => FaultRules::none(),
        Some(rule) => {
            // The rules in force are the union of what was set before and the new rule.
            let answer = admin(client, run, AdminRequest::Faults).await?;
            let AdminAnswer::Faults(current) = answer else {
                return Err(unexpected(&answer));
            };
            with_rule(&current, rule)?
        }
    };
    let answers = ask_all(client, AdminRequest::SetFaults(rules.clone())).await?;
    let mut failed = Vec::new();
    let mut nodes = Vec::new();
    for (id, address, answer) in answers {
        match answer {
            Ok(_) => nodes.push(json!({ "node": id.to_string(), "ok": true })),
            Err(error) => {
                nodes.push(
                    json!({ "node": id.to_string(), "ok": false, "error": error.to_string() }),
                );
                failed.push(format!("{id} ({address}): {error}"));
            }
        }
    }
    let text = format!("fault rules: {}", rules_text(&rules));
    let rule_list: Vec<String> = rules.rules.iter().map(ToString::to_string).collect();
    let object = json!({ "ok": failed.is_empty(), "rules": rule_list, "nodes": nodes });
    print(out, run, &text, object)?;
    if !failed.is_empty() {
        bail!("the rules are not set on {}", failed.join(", "));
    }
    Ok(())
}

async fn fault_list(
    client: &Client,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let answers = ask_all(client, AdminRequest::Faults).await?;
    let mut nodes = Vec::new();
    for (id, address, answer) in answers {
        let line = match &answer {
            Ok(AdminAnswer::Faults(rules)) => {
                let list: Vec<String> = rules.rules.iter().map(ToString::to_string).collect();
                nodes.push(json!({ "node": id.to_string(), "rules": list }));
                rules_text(rules)
            }
            Ok(other) => return Err(unexpected(other)),
            Err(error) => {
                nodes.push(json!({ "node": id.to_string(), "error": error.to_string() }));
                format!("unreachable: {error}")
            }
        };
        if !run.json {
            writeln!(out, "{id} {address}: {line}")?;
        }
    }
    if run.json {
        writeln!(out, "{}", json!({ "ok": true, "nodes": nodes }))?;
    }
    Ok(())
}

fn group_line(group: &GroupStatus) -> String {
    let leader = group.leader.map_or("none".to_string(), |l| l.to_string());
    format!(
        "  strong   {:<16} {:<13} term {} leader {} commit {} applied {}",
        group.keyspace,
        group.role.to_string(),
        group.term.0,
        leader,
        group.commit.0,
        group.applied.0
    )
}

fn eventual_line(keyspace: &EventualStatus) -> String {
    let last = keyspace
        .last_round_ms_ago
        .map_or("never".to_string(), |ms| format!("{ms}ms ago"));
    let mut line = format!(
        "  eventual {:<16} keys {} (live {}) merkle {:016x} last round {} rounds {} pending {}",
        keyspace.keyspace,
        keyspace.keys,
        keyspace.live_keys,
        keyspace.merkle_root,
        last,
        keyspace.rounds,
        keyspace.pending_writes
    );
    if keyspace.states_from_future > 0 {
        let refused = keyspace.states_from_future;
        line.push_str(&format!(
            " refused {refused} states stamped past the allowed clock skew"
        ));
    }
    line
}

/// A paxos keyspace's line: its acceptors, what waits on this node, what it caches.
fn paxos_line(keyspace: &crate::protocol::admin::PaxosStatus) -> String {
    let acceptors: Vec<String> = keyspace.acceptors.iter().map(ToString::to_string).collect();
    format!(
        "  {:<16} paxos     acceptors {} pending {} cached {}",
        keyspace.keyspace,
        acceptors.join(","),
        keyspace.pending,
        keyspace.cached
    )
}

/// The text lines of one node's status.
pub fn status_lines(
    id: NodeId,
    address: &str,
    answer: &Result<AdminAnswer, ConnError>,
) -> Vec<String> {
    let status = match answer {
        Ok(AdminAnswer::Status(status)) => status,
        Ok(_) => return vec![format!("{id} {address} answered something else")],
        Err(error) => return vec![format!("{id} {address} unreachable: {error}")],
    };
    let mut lines = vec![format!("{id} {address} up {}s", status.uptime_ms / 1000)];
    lines.extend(status.strong.iter().map(group_line));
    lines.extend(status.eventual.iter().map(eventual_line));
    lines.extend(status.paxos.iter().map(paxos_line));
    lines.push(format!("  faults: {}", rules_text(&status.faults)));
    let driver = &status.driver;
    lines.push(format!(
        "  driver: {} rounds, longest {:.1} ms, longest busy {:.1} ms",
        driver.rounds,
        driver.round_max_us as f64 / 1000.0,
        driver.busy_max_us as f64 / 1000.0
    ));
    lines
}

fn status_json(id: NodeId, address: &str, answer: &Result<AdminAnswer, ConnError>) -> Value {
    let status: &NodeStatus = match answer {
        Ok(AdminAnswer::Status(status)) => status,
        Ok(_) => {
            return json!({ "node": id.to_string(), "reachable": true, "error": "unexpected answer" });
        }
        Err(error) => {
            return json!({ "node": id.to_string(), "address": address, "reachable": false, "error": error.to_string() });
        }
    };
    let strong: Vec<Value> = status
        .strong
        .iter()
        .map(|g| {
            json!({
                "keyspace": g.keyspace, "group": g.group.0, "role": g.role.to_string(),
                "term": g.term.0, "leader": g.leader.map(|l| l.to_string()),
                "commit": g.commit.0, "applied": g.applied.0, "last_index": g.last_index.0,
                "snapshot_index": g.snapshot_index.0,
                "voters": g.voters.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    let eventual: Vec<Value> = status
        .eventual
        .iter()
        .map(|e| {
            json!({
                "keyspace": e.keyspace, "keys": e.keys, "live_keys": e.live_keys,
                "merkle_root": format!("{:016x}", e.merkle_root),
                "state_digest": format!("{:016x}", e.state_digest),
                "last_round_ms_ago": e.last_round_ms_ago, "rounds": e.rounds,
                "pending_writes": e.pending_writes, "tombstones": e.tombstones,
                "states_from_future": e.states_from_future,
            })
        })
        .collect();
    let paxos: Vec<Value> = status
        .paxos
        .iter()
        .map(|p| {
            json!({
                "keyspace": p.keyspace, "id": p.id.0,
                "acceptors": p.acceptors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "pending": p.pending, "cached": p.cached,
            })
        })
        .collect();
    let faults: Vec<String> = status
        .faults
        .rules
        .iter()
        .map(ToString::to_string)
        .collect();
    json!({
        "node": id.to_string(), "address": address, "reachable": true,
        "uptime_ms": status.uptime_ms, "strong": strong, "eventual": eventual, "paxos": paxos,
        "faults": faults,
        "driver": {
            "rounds": status.driver.rounds,
            "round_max_us": status.driver.round_max_us,
            "busy_max_us": status.driver.busy_max_us,
        },
    })
}

async fn status_once(
    client: &Client,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let answers = ask_all(client, AdminRequest::Status).await?;
    if run.json {
        let nodes: Vec<Value> = answers
            .iter()
            .map(|(id, address, answer)| status_json(*id, address, answer))
            .collect();
        writeln!(out, "{}", json!({ "ok": true, "nodes": nodes }))?;
        return Ok(());
    }
    for (id, address, answer) in &answers {
        for line in status_lines(*id, address, answer) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

async fn status(
    client: &Client,
    args: &StatusArgs,
    run: &Run,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    if !args.watch {
        return status_once(client, run, out).await;
    }
    loop {
        if !run.json {
            // Clear the screen and go home, so the view refreshes in place.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        if let Err(error) = status_once(client, run, out).await {
            writeln!(out, "status: {error:#}")?;
        }
        out.flush()?;
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::faults::FaultRuleError;
    use crate::protocol::admin::{DriverStats, RaftRole};
    use crate::types::{GroupId, LogIndex, Term};

    const N1: NodeId = NodeId(1);
    const N2: NodeId = NodeId(2);
    const N3: NodeId = NodeId(3);

    #[test]
    fn fault_commands_build_validated_rules() {
        let partition = FaultCommand::Partition {
            sides: vec![vec![N1, N2], vec![N3]],
        };
        assert_eq!(
            fault_rule(&partition).unwrap(),
            Some(FaultRule::Partition {
                sides: vec![vec![N1, N2], vec![N3]]
            })
        );
        let overlapping = FaultCommand::Partition {
            sides: vec![vec![N1, N2], vec![N2]],
        };
        let error = fault_rule(&overlapping).unwrap_err();
        let expected = FaultRuleError::NodeInTwoSides { node: N2 }.to_string();
        assert!(error.0.contains(&expected), "{error}");
        let to_itself = FaultCommand::Cut { from: N1, to: N1 };
        assert!(fault_rule(&to_itself).is_err());
        let long = FaultCommand::Delay {
            a: N1,
            b: N2,
            delay: Duration::from_secs(9),
            jitter: Duration::from_secs(2),
        };
        assert!(fault_rule(&long).is_err());
        assert_eq!(fault_rule(&FaultCommand::Heal).unwrap(), None);
    }

    #[test]
    fn new_rules_join_the_rules_in_force_once() {
        let isolate = FaultRule::Isolate { node: N3 };
        let loss = FaultRule::Loss {
            a: N1,
            b: N2,
            percent: 20,
        };
        let rules = with_rule(&FaultRules::none(), isolate.clone()).unwrap();
        let rules = with_rule(&rules, loss.clone()).unwrap();
        let rules = with_rule(&rules, isolate.clone()).unwrap();
        assert_eq!(rules.rules, vec![isolate, loss]);
    }

    #[test]
    fn keyspace_modes_from_flags() {
        assert_eq!(
            keyspace_mode(ModeArg::Strong, None).unwrap(),
            KeyspaceMode::Strong
        );
        assert_eq!(
            keyspace_mode(ModeArg::Eventual, None).unwrap(),
            KeyspaceMode::Eventual(ValueType::Lww)
        );
        assert_eq!(
            keyspace_mode(ModeArg::Eventual, Some(TypeArg::Set)).unwrap(),
            KeyspaceMode::Eventual(ValueType::Set)
        );
        assert!(keyspace_mode(ModeArg::Strong, Some(TypeArg::Counter)).is_err());
        assert_eq!(
            keyspace_mode(ModeArg::Paxos, None).unwrap(),
            KeyspaceMode::Paxos
        );
        assert!(keyspace_mode(ModeArg::Paxos, Some(TypeArg::Lww)).is_err());
    }

    #[test]
    fn status_shows_groups_keyspaces_and_unreachable_nodes() {
        let status = NodeStatus {
            node: N1,
            address: "127.0.0.1:7001".into(),
            uptime_ms: 12_500,
            strong: vec![GroupStatus {
                keyspace: "orders".into(),
                group: GroupId(1),
                role: RaftRole::Leader,
                term: Term(3),
                leader: Some(N1),
                commit: LogIndex(42),
                applied: LogIndex(41),
                last_index: LogIndex(42),
                snapshot_index: LogIndex(30),
                voters: vec![N1, N2, N3],
            }],
            eventual: vec![],
            faults: FaultRules {
                rules: vec![FaultRule::Isolate { node: N3 }],
            },
            driver: DriverStats {
                rounds: 7,
                round_max_us: 4_250,
                busy_max_us: 900,
            },
            paxos: vec![],
        };
        let answer = Ok(AdminAnswer::Status(Box::new(status)));
        let lines = status_lines(N1, "127.0.0.1:7001", &answer);
        assert_eq!(lines[0], "n1 127.0.0.1:7001 up 12s");
        assert!(
            lines[1].contains("orders") && lines[1].contains("leader"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with("term 3 leader n1 commit 42 applied 41"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "  faults: isolate n3");
        assert_eq!(
            lines[3],
            "  driver: 7 rounds, longest 4.2 ms, longest busy 0.9 ms"
        );
        let json = status_json(N1, "127.0.0.1:7001", &answer);
        assert_eq!(json["driver"]["round_max_us"], 4_250);
        let down = Err(ConnError::Connect {
            endpoint: "127.0.0.1:7003".into(),
            reason: "timed out".into(),
        });
        let lines = status_lines(N3, "127.0.0.1:7003", &down);
        assert!(
            lines[0].starts_with("n3 127.0.0.1:7003 unreachable"),
            "{}",
            lines[0]
        );
        assert_eq!(status_json(N3, "127.0.0.1:7003", &down)["reachable"], false);
    }
}
