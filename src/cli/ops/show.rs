//! How answers are shown: the value on one line, the receipt on one line under it, or one
//! JSON object with `--json`.

use super::parse::{format_context, format_session, hex};
use crate::eventual::{HlcTimestamp, ReadValue};
use crate::protocol::{Answer, Position, Receipt, Served, WatchEvent, WriteLevel};
use crate::strong::Versioned;
use crate::types::NodeId;
use serde_json::{Value, json};

/// Bytes as text when they are UTF-8 without control characters, else `0x` and hex.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => format!("0x{}", hex(bytes)),
    }
}

/// The name the CLI takes for a write level.
pub fn write_name(level: WriteLevel) -> &'static str {
    match level {
        WriteLevel::Local => "local",
        WriteLevel::Quorum => "quorum",
        WriteLevel::All => "all",
    }
}

fn served_name(served: Served) -> String {
    match served {
        Served::Read(level) => level.name().to_string(),
        Served::Committed => "committed".to_string(),
        Served::Write(level) => format!("{} write", write_name(level)),
    }
}

fn vector_text(vector: &[(NodeId, u64)]) -> String {
    let entries: Vec<String> = vector
        .iter()
        .map(|(node, count)| format!("{node}={count}"))
        .collect();
    entries.join(",")
}

fn stamp_text(stamp: &HlcTimestamp) -> String {
    format!("{}.{}@{}", stamp.physical_ms, stamp.logical, stamp.node)
}

/// The revision a strong write answer reports, if it is one.
fn written_revision(answer: &Answer) -> Option<u64> {
    match answer {
        Answer::Written { revision } | Answer::Cas { revision, .. } => Some(revision.0),
        _ => None,
    }
}

/// The receipt on one line: `receipt: linearizable by n1 · term 3 · applied 42 (commit 42)`,
/// `receipt: committed by n1 · revision 17`, `receipt: quorum write by n2 · 2 acks ·
/// session n2:42`.
pub fn format_receipt(answer: &Answer, receipt: &Receipt) -> String {
    let mut parts = vec![format!(
        "{} by {}",
        served_name(receipt.level),
        receipt.node
    )];
    match (&receipt.position, written_revision(answer)) {
        (Position::Raft { .. }, Some(revision)) => parts.push(format!("revision {revision}")),
        (
            Position::Raft {
                term,
                applied,
                known_commit,
            },
            None,
        ) => {
            parts.push(format!("term {}", term.0));
            parts.push(format!("applied {} (commit {})", applied.0, known_commit.0));
        }
        (
            Position::Eventual {
                token,
                stamp,
                vector,
            },
            _,
        ) => {
            if let Answer::Acknowledged { acks } = answer {
                let plural = if *acks == 1 { "" } else { "s" };
                parts.push(format!("{acks} ack{plural}"));
            } else if !vector.is_empty() {
                // A read says which writes the serving node held.
                parts.push(format!("vector {}", vector_text(vector)));
            }
            if let Some(token) = token {
                parts.push(format!("session {}", format_session(token)));
            }
            if let Some(stamp) = stamp {
                parts.push(format!("stamp {}", stamp_text(stamp)));
            }
        }
        (Position::Paxos { ballot, acceptors }, revision) => {
            if let Some(revision) = revision {
                parts.push(format!("revision {revision}"));
            }
            parts.push(format!("ballot {}", ballot_text(ballot)));
            parts.push(format!("acceptors {}", nodes_text(acceptors)));
        }
    }
    if let Answer::Strong(Some(versioned)) = answer {
        parts.push(format!("key revision {}", versioned.mod_revision.0));
    }
    if let Some(behind) = receipt.behind {
        parts.push(format!("{behind} behind"));
    }
    if let Answer::Eventual(ReadValue::MvReg { context, .. }) = answer {
        parts.push(format!("context {}", format_context(context)));
    }
    format!("receipt: {}", parts.join(" · "))
}

fn versioned_text(versioned: Option<&Versioned>) -> String {
    versioned.map_or_else(|| "(absent)".to_string(), |v| text(&v.value))
}

/// What a scan that found nothing prints.
pub const NO_KEYS: &str = "(no keys)";

/// A scan's line for one key: `KEY = VALUE`.
pub fn entry_line(key: &[u8], version: &Versioned) -> String {
    format!("{} = {}", text(key), text(&version.value))
}

/// The line after a scan that its limit stopped before the last key.
pub fn more_line(next: &[u8]) -> String {
    format!("(more keys follow: continue with --after {})", text(next))
}

/// A scan's receipt line: the last page's receipt, and how many pages were read if more than
/// one (each page is a read of its own, so the line gives the first one's applied index too).
pub fn scan_receipt(answer: &Answer, last: &Receipt, first: &Receipt, pages: usize) -> String {
    let line = format_receipt(answer, last);
    match (&first.position, pages) {
        (Position::Raft { applied, .. }, 2..) => {
            format!("{line} · {pages} pages, the first at applied {}", applied.0)
        }
        _ => line,
    }
}

/// The value lines of an answer: one line, except a scan's one line per key (and one saying
/// where to continue, when more keys follow).
pub fn value_lines(answer: &Answer) -> Vec<String> {
    match answer {
        Answer::Strong(versioned) => vec![versioned_text(versioned.as_ref())],
        Answer::Written { .. } | Answer::Acknowledged { .. } => vec!["OK".to_string()],
        Answer::Cas {
            succeeded: true, ..
        } => vec!["OK".to_string()],
        Answer::Cas { current, .. } => vec![format!(
            "cas failed; current: {}{}",
            versioned_text(current.as_ref()),
            current
                .as_ref()
                .map(|v| format!(" (revision {})", v.mod_revision.0))
                .unwrap_or_default()
        )],
        Answer::Scan { entries, next } => {
            let mut lines: Vec<String> = entries.iter().map(|(k, v)| entry_line(k, v)).collect();
            match next {
                Some(next) => lines.push(more_line(next)),
                None if lines.is_empty() => lines.push(NO_KEYS.to_string()),
                None => {}
            }
            lines
        }
        Answer::Eventual(value) => vec![eventual_text(value)],
        Answer::Watch { events, .. } => events.iter().map(event_line).collect(),
        Answer::Txn {
            succeeded: true,
            revision,
        } => vec![format!(
            "OK: the compares held, the then-branch ran (revision {})",
            revision.0
        )],
        Answer::Txn { revision, .. } => vec![format!(
            "the compares failed, the else-branch ran (revision {})",
            revision.0
        )],
        // The CLI never sends a step itself; shown raw for whoever does.
        Answer::TxnStep { revision, outcome } => {
            vec![format!("{outcome:?} (revision {})", revision.0)]
        }
    }
}

/// One line per watch event: `put KEY = VALUE (revision R)`, `delete KEY (revision R)`,
/// `changed KEY = VALUE`.
pub fn event_line(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Put { key, value } => format!(
            "put {} = {} (revision {})",
            text(key),
            text(&value.value),
            value.mod_revision.0
        ),
        WatchEvent::Delete { key, revision } => {
            format!("delete {} (revision {})", text(key), revision.0)
        }
        WatchEvent::Changed { key, value, .. } => {
            format!("changed {} = {}", text(key), eventual_text(value))
        }
    }
}

/// A watch event as one JSON object.
pub fn event_json(event: &WatchEvent) -> Value {
    match event {
        WatchEvent::Put { key, value } => json!({
            "event": "put",
            "key": text(key),
            "value": versioned_json(Some(value)),
            "revision": value.mod_revision.0,
        }),
        WatchEvent::Delete { key, revision } => json!({
            "event": "delete",
            "key": text(key),
            "revision": revision.0,
        }),
        WatchEvent::Changed {
            key,
            value,
            position,
        } => json!({
            "event": "changed",
            "key": text(key),
            "value": eventual_json(value),
            "feed": format!("{:016x}", position.feed),
            "position": position.seq,
        }),
    }
}

fn eventual_text(value: &ReadValue) -> String {
    match value {
        ReadValue::Lww { value, .. } => value
            .as_ref()
            .map_or_else(|| "(absent)".to_string(), |v| text(v)),
        ReadValue::MvReg { siblings, .. } => match siblings.as_slice() {
            [] => "(absent)".to_string(),
            [one] => text(one),
            many => {
                let shown: Vec<String> = many.iter().map(|v| text(v)).collect();
                format!("{} siblings: {}", many.len(), shown.join(" | "))
            }
        },
        ReadValue::Counter(count) => count.to_string(),
        ReadValue::Set { members, .. } => {
            let shown: Vec<String> = members.iter().map(|m| text(m)).collect();
            format!("{{{}}}", shown.join(", "))
        }
    }
}

fn versioned_json(versioned: Option<&Versioned>) -> Value {
    versioned.map_or(Value::Null, |v| {
        json!({
            "value": text(&v.value),
            "create_revision": v.create_revision.0,
            "mod_revision": v.mod_revision.0,
        })
    })
}

fn answer_json(answer: &Answer) -> Value {
    match answer {
        Answer::Strong(versioned) => json!({ "value": versioned_json(versioned.as_ref()) }),
        Answer::Written { revision } => json!({ "revision": revision.0 }),
        Answer::Cas {
            succeeded,
            revision,
            current,
        } => json!({
            "succeeded": succeeded,
            "revision": revision.0,
            "current": versioned_json(current.as_ref()),
        }),
        Answer::Scan { entries, next } => {
            let keys: Vec<Value> = entries
                .iter()
                .map(|(key, v)| json!({ "key": text(key), "value": versioned_json(Some(v)) }))
                .collect();
            json!({
                "keys": keys,
                "more": next.is_some(),
                "next": next.as_ref().map(|next| text(next)),
            })
        }
        Answer::Eventual(value) => eventual_json(value),
        Answer::Acknowledged { acks } => json!({ "acks": acks }),
        Answer::Watch { events, next } => json!({
            "events": events.iter().map(event_json).collect::<Vec<_>>(),
            "next": next.to_string(),
        }),
        Answer::Txn {
            succeeded,
            revision,
        } => json!({ "succeeded": succeeded, "revision": revision.0 }),
        Answer::TxnStep { revision, outcome } => {
            json!({ "revision": revision.0, "step": format!("{outcome:?}") })
        }
    }
}

fn eventual_json(value: &ReadValue) -> Value {
    match value {
        ReadValue::Lww { value, stamp } => json!({
            "value": value.as_ref().map(|v| text(v)),
            "stamp": stamp.as_ref().map(stamp_text),
        }),
        ReadValue::MvReg { siblings, context } => json!({
            "siblings": siblings.iter().map(|v| text(v)).collect::<Vec<_>>(),
            "context": format_context(context),
        }),
        ReadValue::Counter(count) => json!({ "value": count }),
        ReadValue::Set { members, .. } => json!({
            "members": members.iter().map(|m| text(m)).collect::<Vec<_>>(),
        }),
    }
}

fn receipt_json(answer: &Answer, receipt: &Receipt) -> Value {
    let mut object = json!({
        "level": served_name(receipt.level),
        "node": receipt.node.to_string(),
        "behind": receipt.behind,
        "text": format_receipt(answer, receipt),
    });
    let extra = match &receipt.position {
        Position::Raft {
            term,
            applied,
            known_commit,
        } => json!({ "term": term.0, "applied": applied.0, "commit": known_commit.0 }),
        Position::Eventual {
            token,
            stamp,
            vector,
        } => {
            let vector: serde_json::Map<String, Value> = vector
                .iter()
                .map(|(node, count)| (node.to_string(), json!(count)))
                .collect();
            json!({
                "session": token.as_ref().map(format_session),
                "stamp": stamp.as_ref().map(stamp_text),
                "vector": vector,
            })
        }
        Position::Paxos { ballot, acceptors } => json!({
            "ballot": ballot_text(ballot),
            "acceptors": acceptors.iter().map(|node| node.0).collect::<Vec<_>>(),
        }),
    };
    if let (Value::Object(object), Value::Object(extra)) = (&mut object, extra) {
        object.extend(extra);
    }
    object
}

/// The JSON object of a data command's answer.
pub fn data_json(command: &str, keyspace: &str, answer: &Answer, receipt: &Receipt) -> Value {
    let mut object = json!({ "command": command, "keyspace": keyspace, "ok": true });
    if let (Value::Object(object), Value::Object(fields)) = (&mut object, answer_json(answer)) {
        object.extend(fields);
    }
    if let Value::Object(object) = &mut object {
        object.insert("receipt".to_string(), receipt_json(answer, receipt));
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventual::{ReadContext, SessionToken};
    use crate::protocol::ReadLevel;
    use crate::types::{LogIndex, Term};
    use bytes::Bytes;

    fn raft(level: Served, behind: Option<u64>) -> Receipt {
        Receipt {
            level,
            node: NodeId(1),
            position: Position::Raft {
                term: Term(3),
                applied: LogIndex(42),
                known_commit: LogIndex(42),
            },
            behind,
        }
    }

    #[test]
    fn strong_receipts() {
        let value = Answer::Strong(Some(Versioned {
            value: Bytes::from_static(b"v"),
            create_revision: LogIndex(10),
            mod_revision: LogIndex(17),
        }));
        let read = raft(Served::Read(ReadLevel::Linearizable), None);
        assert_eq!(
            format_receipt(&value, &read),
            "receipt: linearizable by n1 · term 3 · applied 42 (commit 42) · key revision 17"
        );
        let stale = raft(Served::Read(ReadLevel::Stale), Some(3));
        assert_eq!(
            format_receipt(&Answer::Strong(None), &stale),
            "receipt: stale by n1 · term 3 · applied 42 (commit 42) · 3 behind"
        );
        let written = Answer::Written {
            revision: LogIndex(17),
        };
        assert_eq!(
            format_receipt(&written, &raft(Served::Committed, None)),
            "receipt: committed by n1 · revision 17"
        );
        assert_eq!(value_lines(&written), vec!["OK"]);
        assert_eq!(value_lines(&value), vec!["v"]);
        assert_eq!(value_lines(&Answer::Strong(None)), vec!["(absent)"]);
    }

    #[test]
    fn eventual_receipts_carry_the_session_token() {
        let receipt = Receipt {
            level: Served::Write(WriteLevel::Quorum),
            node: NodeId(2),
            position: Position::Eventual {
                token: Some(SessionToken {
                    node: NodeId(2),
                    seq: 42,
                }),
                stamp: None,
                vector: vec![(NodeId(2), 42)],
            },
            behind: None,
        };
        let acked = Answer::Acknowledged { acks: 2 };
        assert_eq!(
            format_receipt(&acked, &receipt),
            "receipt: quorum write by n2 · 2 acks · session n2:42"
        );
        let json = data_json("sadd", "carts", &acked, &receipt);
        assert_eq!(json["receipt"]["session"], "n2:42");
        assert_eq!(json["acks"], 2);
        assert_eq!(json["receipt"]["vector"]["n2"], 42);
    }

    #[test]
    fn mvreg_siblings_and_context_are_shown() {
        let read = Answer::Eventual(ReadValue::MvReg {
            siblings: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            context: ReadContext(Default::default()),
        });
        assert_eq!(value_lines(&read), vec!["2 siblings: a | b"]);
        let receipt = Receipt {
            level: Served::Read(ReadLevel::Local),
            node: NodeId(2),
            position: Position::Eventual {
                token: None,
                stamp: None,
                vector: vec![(NodeId(1), 3), (NodeId(2), 5)],
            },
            behind: None,
        };
        let line = format_receipt(&read, &receipt);
        let start = "receipt: local by n2 · vector n1=3,n2=5 · context ";
        assert!(line.starts_with(start), "{line}");
        let token = line.rsplit(' ').next().unwrap();
        assert_eq!(
            super::super::parse::context(token),
            Ok(ReadContext(Default::default()))
        );
    }

    #[test]
    fn values_that_are_not_text_print_as_hex() {
        assert_eq!(text(b"hello"), "hello");
        assert_eq!(text(&[0xff, 0x00]), "0xff00");
        assert_eq!(text(b"a\nb"), "0x610a62");
        let set = Answer::Eventual(ReadValue::Set {
            members: vec![Bytes::from_static(b"x"), Bytes::from_static(b"y")],
            context: crate::eventual::ReadContext(Default::default()),
        });
        assert_eq!(value_lines(&set), vec!["{x, y}"]);
        let count = Answer::Eventual(ReadValue::Counter(-3));
        assert_eq!(value_lines(&count), vec!["-3"]);
    }

    #[test]
    fn scans_print_a_line_per_key_and_where_to_continue() {
        let version = Versioned {
            value: Bytes::from_static(b"1"),
            create_revision: LogIndex(4),
            mod_revision: LogIndex(4),
        };
        let entries = vec![(Bytes::from_static(b"a"), version)];
        let cut = Answer::Scan {
            entries: entries.clone(),
            next: Some(Bytes::from_static(b"a")),
        };
        assert_eq!(
            value_lines(&cut),
            vec!["a = 1", "(more keys follow: continue with --after a)"]
        );
        let none = Answer::Scan {
            entries: Vec::new(),
            next: None,
        };
        assert_eq!(value_lines(&none), vec![NO_KEYS]);
        let json = data_json("scan", "orders", &cut, &raft(Served::Committed, None));
        assert_eq!((&json["more"], &json["next"]), (&json!(true), &json!("a")));
        let level = Served::Read(ReadLevel::Linearizable);
        let (first, last) = (raft(level, None), raft(level, None));
        let line = scan_receipt(&none, &last, &first, 3);
        assert!(
            line.ends_with(" · 3 pages, the first at applied 42"),
            "{line}"
        );
        assert!(!scan_receipt(&none, &last, &first, 1).contains("pages"));
    }
}

/// A paxos ballot as `round.node.incarnation`: `7.n2.3` is round 7 of node 2's third start.
fn ballot_text(ballot: &crate::paxos::Ballot) -> String {
    format!(
        "{}.{}.{}",
        ballot.round, ballot.proposer.node, ballot.proposer.incarnation
    )
}

/// Nodes as `n1,n2`.
fn nodes_text(nodes: &[crate::types::NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(ToString::to_string).collect();
    names.join(",")
}
