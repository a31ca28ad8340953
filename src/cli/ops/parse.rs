//! Parsers for command-line values: levels, durations, percentages, node ids, session and
//! context tokens. Each returns a message a person can act on.

use crate::eventual::{ReadContext, SessionToken};
use crate::protocol::{ReadLevel, WriteLevel};
use crate::types::{LogIndex, NodeId};
use crate::wire;
use std::time::Duration;

/// `linearizable|lease|follower|stale|local|session|quorum`.
pub fn read_level(text: &str) -> Result<ReadLevel, String> {
    Ok(match text {
        "linearizable" => ReadLevel::Linearizable,
        "lease" => ReadLevel::Lease,
        "follower" => ReadLevel::Follower,
        "stale" => ReadLevel::Stale,
        "local" => ReadLevel::Local,
        "session" => ReadLevel::Session,
        "quorum" => ReadLevel::Quorum,
        _ => {
            return Err(format!(
                "unknown read level {text:?}: use linearizable, lease, follower or stale \
                 (strong), local, session or quorum (eventual)"
            ));
        }
    })
}

/// `local|quorum|all`.
pub fn write_level(text: &str) -> Result<WriteLevel, String> {
    Ok(match text {
        "local" => WriteLevel::Local,
        "quorum" => WriteLevel::Quorum,
        "all" => WriteLevel::All,
        _ => {
            return Err(format!(
                "unknown write level {text:?}: use local, quorum or all"
            ));
        }
    })
}

/// A duration with a unit: `50ms`, `1s`, `1.5s`, `2m`, `250us`.
pub fn duration(text: &str) -> Result<Duration, String> {
    let units: [(&str, f64); 4] = [("ms", 1e-3), ("us", 1e-6), ("s", 1.0), ("m", 60.0)];
    let bad = || format!("invalid duration {text:?}: use a number and a unit, like 50ms or 1s");
    let (number, scale) = units
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|number| (number, *scale)))
        .ok_or_else(bad)?;
    // `f64::from_str` would also take "inf" and "nan"; a duration is digits and a point.
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// A whole percentage, `20%` or `20`, at most 100.
pub fn percent(text: &str) -> Result<u8, String> {
    let number = text.strip_suffix('%').unwrap_or(text);
    match number.parse::<u8>() {
        Ok(value) if value <= 100 => Ok(value),
        _ => Err(format!(
            "invalid percentage {text:?}: use a whole number from 0% to 100%"
        )),
    }
}

/// A node id: `n1`.
pub fn node_id(text: &str) -> Result<NodeId, String> {
    text.strip_prefix('n')
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .map(NodeId)
        .ok_or_else(|| format!("invalid node id {text:?}: node ids look like n1, n2, ..."))
}

/// A comma-separated list of node ids: `n1,n2`.
pub fn node_list(text: &str) -> Result<Vec<NodeId>, String> {
    text.split(',').map(str::trim).map(node_id).collect()
}

/// A session token as a write's receipt prints it: `n2:42`.
pub fn session_token(text: &str) -> Result<SessionToken, String> {
    let bad =
        || format!("invalid session token {text:?}: use the token a write printed, like n2:42");
    let (node, seq) = text.split_once(':').ok_or_else(bad)?;
    let node = node_id(node).map_err(|_| bad())?;
    let seq = seq.parse().map_err(|_| bad())?;
    Ok(SessionToken { node, seq })
}

/// Prints a session token the way [`session_token`] reads it.
pub fn format_session(token: &SessionToken) -> String {
    format!("{}:{}", token.node, token.seq)
}

/// The expectation of a cas: the mod revision the key must have (`None`: absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect(pub Option<LogIndex>);

/// A cas expectation: a mod revision, or `absent`.
pub fn expectation(text: &str) -> Result<Expect, String> {
    if text == "absent" {
        return Ok(Expect(None));
    }
    text.parse()
        .map(|revision| Expect(Some(LogIndex(revision))))
        .map_err(|_| format!("invalid expectation {text:?}: use a revision number or `absent`"))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// An mvreg read context as an opaque token: the hex of its wire encoding.
pub fn format_context(context: &ReadContext) -> String {
    // Encoding a clock of a few entries cannot exceed the frame limit; an empty token would
    // only make the next write a blind one.
    wire::encode(context)
        .map(|frame| hex(&frame))
        .unwrap_or_default()
}

/// Reads back a token printed by [`format_context`].
pub fn context(text: &str) -> Result<ReadContext, String> {
    let bad = || format!("invalid context {text:?}: pass the context token a read printed");
    let bytes = unhex(text).ok_or_else(bad)?;
    match wire::decode::<ReadContext>(&bytes) {
        Ok((context, used)) if used == bytes.len() => Ok(context),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_by_name_only() {
        assert_eq!(read_level("lease"), Ok(ReadLevel::Lease));
        assert_eq!(read_level("session"), Ok(ReadLevel::Session));
        assert!(read_level("Linearizable").is_err());
        assert_eq!(write_level("all"), Ok(WriteLevel::All));
        assert!(write_level("majority").is_err());
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["50", "ms", "-1s", "infs", "nans", "1e3ms", "", "1 s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages_stop_at_one_hundred() {
        assert_eq!(percent("20%"), Ok(20));
        assert_eq!(percent("100"), Ok(100));
        assert!(percent("101%").is_err());
        assert!(percent("-1%").is_err());
        assert!(percent("2.5%").is_err());
    }

    #[test]
    fn node_ids_and_lists() {
        assert_eq!(node_id("n12"), Ok(NodeId(12)));
        assert!(node_id("12").is_err());
        assert!(node_id("n").is_err());
        assert!(node_id("n+1").is_err());
        assert_eq!(node_list("n1,n2"), Ok(vec![NodeId(1), NodeId(2)]));
        assert!(node_list("n1,,n2").is_err());
    }

    #[test]
    fn cas_expectations() {
        assert_eq!(expectation("absent"), Ok(Expect(None)));
        assert_eq!(expectation("17"), Ok(Expect(Some(LogIndex(17)))));
        assert!(expectation("-3").is_err());
        assert!(expectation("latest").is_err());
    }

    #[test]
    fn session_tokens_round_trip() {
        let token = SessionToken {
            node: NodeId(2),
            seq: 42,
        };
        assert_eq!(format_session(&token), "n2:42");
        assert_eq!(session_token("n2:42"), Ok(token));
        assert!(session_token("n2").is_err());
        assert!(session_token("2:42").is_err());
    }

    #[test]
    fn context_tokens_round_trip_and_reject_garbage() {
        use crdts::CmRDT;
        let mut clock = crdts::VClock::new();
        clock.apply(crdts::Dot::new(NodeId(1), 3));
        clock.apply(crdts::Dot::new(NodeId(2), 5));
        let read = ReadContext(clock);
        let token = format_context(&read);
        assert_eq!(context(&token), Ok(read));
        assert!(context("zz").is_err());
        assert!(context(&token[..token.len() - 2]).is_err());
        assert!(context(&format!("{token}00")).is_err());
    }
}
