//! Fault rules a node's transport applies to what it sends and what it receives.
//!
//! The CLI sets the same rules on every node (`capdial fault ...`), and each node judges
//! every message on both ends, so a rule holds even if only one side has heard of it. The
//! judging is a pure function of the rules and a random draw, kept apart from the sockets so
//! it can be tested on its own.

use crate::rng::SeededRng;
use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// The loss rate is a whole percentage; 100 cuts the link.
pub const LOSS_PERCENT_MAX: u8 = 100;
/// Delays above this are almost certainly a typo, and would hold messages in memory. A rule's
/// delay plus its jitter must stay within it.
pub const DELAY_MAX: Duration = Duration::from_secs(10);

/// Most rules a node holds: every message is judged against each of them.
pub const RULES_MAX: usize = 64;

/// Most nodes a partition's sides name together (a cluster has at most 64 members).
pub const PARTITION_NODES_MAX: usize = 64;

/// One rule. Rules add up: a message is dropped if any rule drops it, and delayed by the sum
/// of every delay that applies to its link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultRule {
    /// Nodes in different sides cannot reach each other, in either direction.
    Partition { sides: Vec<Vec<NodeId>> },
    /// The node reaches no one and no one reaches it.
    Isolate { node: NodeId },
    /// Messages from `from` to `to` are lost; the reverse direction works.
    Cut { from: NodeId, to: NodeId },
    /// Messages between `a` and `b`, either way, wait `delay` plus up to `jitter` more.
    Delay {
        a: NodeId,
        b: NodeId,
        delay: Duration,
        jitter: Duration,
    },
    /// Messages between `a` and `b`, either way, are lost with this probability.
    Loss { a: NodeId, b: NodeId, percent: u8 },
}

/// The rules in force on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRules {
    pub rules: Vec<FaultRule>,
}

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Deliver { delay: Duration },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultRuleError {
    #[error("loss of {percent}% is more than 100%")]
    LossTooHigh { percent: u8 },
    /// Each part is reported as given: their sum may not even be a `Duration`.
    #[error("delay of {delay:?} plus jitter of {jitter:?} exceeds the limit of {delay_max:?}")]
    DelayTooLong {
        delay: Duration,
        jitter: Duration,
        delay_max: Duration,
    },
    #[error("a partition needs at least two non-empty sides")]
    PartitionSides,
    #[error("{node} appears in two sides of the partition")]
    NodeInTwoSides { node: NodeId },
    #[error("a rule between {node} and itself means nothing")]
    SameNode { node: NodeId },
    #[error("more than {rules_max} fault rules")]
    TooManyRules { rules_max: usize },
    #[error("a partition of more than {nodes_max} nodes")]
    PartitionTooLarge { nodes_max: usize },
}

impl FaultRule {
    /// Checks a rule before it is installed, so a node never holds a rule it cannot apply.
    pub fn validate(&self) -> Result<(), FaultRuleError> {
        match self {
            FaultRule::Partition { sides } => validate_sides(sides),
            FaultRule::Isolate { .. } => Ok(()),
            FaultRule::Cut { from: a, to: b } | FaultRule::Delay { a, b, .. } if a == b => {
                Err(FaultRuleError::SameNode { node: *a })
            }
            FaultRule::Loss { a, b, .. } if a == b => Err(FaultRuleError::SameNode { node: *a }),
            // Checked: a rule comes from a client, and `Duration + Duration` panics on overflow.
            FaultRule::Delay { delay, jitter, .. }
                if delay
                    .checked_add(*jitter)
                    .is_none_or(|total| total > DELAY_MAX) =>
            {
                Err(FaultRuleError::DelayTooLong {
                    delay: *delay,
                    jitter: *jitter,
                    delay_max: DELAY_MAX,
                })
            }
            FaultRule::Loss { percent, .. } if *percent > LOSS_PERCENT_MAX => {
                Err(FaultRuleError::LossTooHigh { percent: *percent })
            }
            FaultRule::Cut { .. } | FaultRule::Delay { .. } | FaultRule::Loss { .. } => Ok(()),
        }
    }

    fn cuts(&self, from: NodeId, to: NodeId) -> bool {
        match self {
            FaultRule::Partition { sides } => {
                let side_of = |node| sides.iter().position(|side| side.contains(&node));
                matches!((side_of(from), side_of(to)), (Some(a), Some(b)) if a != b)
            }
            FaultRule::Isolate { node } => (from == *node) != (to == *node),
            FaultRule::Cut {
                from: cut_from,
                to: cut_to,
            } => from == *cut_from && to == *cut_to,
            FaultRule::Delay { .. } | FaultRule::Loss { .. } => false,
        }
    }
}

fn validate_sides(sides: &[Vec<NodeId>]) -> Result<(), FaultRuleError> {
    if sides.len() < 2 || sides.iter().any(Vec::is_empty) {
        return Err(FaultRuleError::PartitionSides);
    }
    if sides.iter().map(Vec::len).sum::<usize>() > PARTITION_NODES_MAX {
        return Err(FaultRuleError::PartitionTooLarge {
            nodes_max: PARTITION_NODES_MAX,
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for node in sides.iter().flatten() {
        if !seen.insert(*node) {
            return Err(FaultRuleError::NodeInTwoSides { node: *node });
        }
    }
    Ok(())
}

fn same_link(a: NodeId, b: NodeId, from: NodeId, to: NodeId) -> bool {
    (a == from && b == to) || (a == to && b == from)
}

impl FaultRules {
    /// No rules: every message is delivered at once.
    pub fn none() -> FaultRules {
        FaultRules::default()
    }

    /// Adds a rule after checking it.
    pub fn add(&mut self, rule: FaultRule) -> Result<(), FaultRuleError> {
        if self.rules.len() >= RULES_MAX {
            return Err(FaultRuleError::TooManyRules {
                rules_max: RULES_MAX,
            });
        }
        rule.validate()?;
        self.rules.push(rule);
        Ok(())
    }

    /// Judges one message from `from` to `to`, drawing from `rng` for loss and jitter.
    pub fn verdict(&self, from: NodeId, to: NodeId, rng: &mut SeededRng) -> Verdict {
        if from == to {
            return Verdict::Deliver {
                delay: Duration::ZERO,
            };
        }
        if self.rules.iter().any(|rule| rule.cuts(from, to)) {
            return Verdict::Drop;
        }
        let mut delay = Duration::ZERO;
        for rule in &self.rules {
            match *rule {
                // The draw happens only for a matching link, so unrelated rules do not
                // shift the random stream.
                FaultRule::Loss { a, b, percent }
                    if same_link(a, b, from, to) && rng.chance(f64::from(percent) / 100.0) =>
                {
                    return Verdict::Drop;
                }
                FaultRule::Delay {
                    a,
                    b,
                    delay: base,
                    jitter,
                } if same_link(a, b, from, to) => {
                    // Saturating: `rules` is a public field, so a set that never went through
                    // `add` must not panic the transport either.
                    let drawn = base.saturating_add(rng.duration_between(Duration::ZERO, jitter));
                    delay = delay.saturating_add(drawn);
                }
                _ => {}
            }
        }
        Verdict::Deliver { delay }
    }
}

impl fmt::Display for FaultRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |side: &Vec<NodeId>| side.iter().map(NodeId::to_string).collect::<Vec<_>>();
        match self {
            FaultRule::Partition { sides } => {
                let sides: Vec<String> = sides.iter().map(|side| list(side).join(",")).collect();
                write!(f, "partition {}", sides.join(" | "))
            }
            FaultRule::Isolate { node } => write!(f, "isolate {node}"),
            FaultRule::Cut { from, to } => write!(f, "cut {from} -> {to}"),
            FaultRule::Delay {
                a,
                b,
                delay,
                jitter,
            } => {
                write!(f, "delay {a} <-> {b} {delay:?} (jitter {jitter:?})")
            }
            FaultRule::Loss { a, b, percent } => write!(f, "loss {a} <-> {b} {percent}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N1: NodeId = NodeId(1);
    const N2: NodeId = NodeId(2);
    const N3: NodeId = NodeId(3);

    fn rules(list: Vec<FaultRule>) -> FaultRules {
        let mut rules = FaultRules::none();
        for rule in list {
            rules.add(rule).unwrap();
        }
        rules
    }

    /// Every message is judged against every rule and every node a partition names, so a
    /// client's SetFaults is bounded in both.
    #[test]
    fn rules_and_partitions_are_bounded() {
        let mut many = FaultRules::none();
        for i in 0..RULES_MAX as u64 {
            many.add(FaultRule::Isolate { node: NodeId(i) }).unwrap();
        }
        let one_more = many.add(FaultRule::Isolate { node: N1 });
        assert_eq!(
            one_more,
            Err(FaultRuleError::TooManyRules {
                rules_max: RULES_MAX
            })
        );
        let nodes = (0..=PARTITION_NODES_MAX as u64).map(NodeId).collect();
        let huge = FaultRule::Partition {
            sides: vec![nodes, vec![NodeId(1_000)]],
        };
        assert_eq!(
            huge.validate(),
            Err(FaultRuleError::PartitionTooLarge {
                nodes_max: PARTITION_NODES_MAX
            })
        );
    }

    #[test]
    fn cuts_drop_in_the_directions_they_name() {
        let mut rng = SeededRng::new(1);
        let partition = rules(vec![FaultRule::Partition {
            sides: vec![vec![N1, N2], vec![N3]],
        }]);
        assert_eq!(partition.verdict(N1, N3, &mut rng), Verdict::Drop);
        assert_eq!(partition.verdict(N3, N2, &mut rng), Verdict::Drop);
        assert_ne!(partition.verdict(N1, N2, &mut rng), Verdict::Drop);
        let isolate = rules(vec![FaultRule::Isolate { node: N2 }]);
        assert_eq!(isolate.verdict(N1, N2, &mut rng), Verdict::Drop);
        assert_ne!(isolate.verdict(N1, N3, &mut rng), Verdict::Drop);
        let cut = rules(vec![FaultRule::Cut { from: N1, to: N3 }]);
        assert_eq!(cut.verdict(N1, N3, &mut rng), Verdict::Drop);
        assert_ne!(cut.verdict(N3, N1, &mut rng), Verdict::Drop);
        assert_ne!(cut.verdict(N1, N1, &mut rng), Verdict::Drop);
    }

    #[test]
    fn delay_and_loss_apply_to_their_link_only() {
        let mut rng = SeededRng::new(2);
        let delay = Duration::from_millis(50);
        let jitter = Duration::from_millis(10);
        let list = vec![
            FaultRule::Delay {
                a: N1,
                b: N2,
                delay,
                jitter,
            },
            FaultRule::Loss {
                a: N2,
                b: N3,
                percent: 30,
            },
        ];
        let faults = rules(list);
        for _ in 0..100 {
            let Verdict::Deliver { delay: got } = faults.verdict(N2, N1, &mut rng) else {
                panic!("a delayed link still delivers");
            };
            assert!(got >= delay && got <= delay + jitter);
        }
        let lost = (0..1000)
            .filter(|_| faults.verdict(N3, N2, &mut rng) == Verdict::Drop)
            .count();
        assert!((200..400).contains(&lost), "lost {lost} of 1000 at 30%");
        assert_eq!(
            faults.verdict(N1, N3, &mut rng),
            Verdict::Deliver {
                delay: Duration::ZERO
            }
        );
    }

    #[test]
    fn nonsense_rules_are_refused() {
        let mut faults = FaultRules::none();
        let bad = [
            (
                FaultRule::Loss {
                    a: N1,
                    b: N2,
                    percent: 101,
                },
                FaultRuleError::LossTooHigh { percent: 101 },
            ),
            (
                FaultRule::Cut { from: N1, to: N1 },
                FaultRuleError::SameNode { node: N1 },
            ),
            (
                FaultRule::Partition {
                    sides: vec![vec![N1]],
                },
                FaultRuleError::PartitionSides,
            ),
            (
                FaultRule::Partition {
                    sides: vec![vec![N1, N2], vec![N2]],
                },
                FaultRuleError::NodeInTwoSides { node: N2 },
            ),
        ];
        for (rule, error) in bad {
            assert_eq!(faults.add(rule), Err(error));
        }
        let long = FaultRule::Delay {
            a: N1,
            b: N2,
            delay: DELAY_MAX,
            jitter: Duration::from_millis(1),
        };
        assert!(matches!(
            faults.add(long),
            Err(FaultRuleError::DelayTooLong { .. })
        ));
        assert!(faults.rules.is_empty());
    }

    /// Issue 12: `validate` added delay and jitter with `+`, which panics on overflow. Any
    /// client can send a rule (`AdminRequest::SetFaults`), so a delay of `Duration::MAX` took
    /// down the node that checked it. Now the sum is checked and the rule refused.
    #[test]
    fn delays_whose_sum_overflows_are_refused_without_a_panic() {
        let delay_rule = |delay, jitter| FaultRule::Delay {
            a: N1,
            b: N2,
            delay,
            jitter,
        };
        let huge = [
            (Duration::MAX, Duration::MAX),
            (Duration::MAX, Duration::ZERO),
            (Duration::ZERO, Duration::MAX),
            (DELAY_MAX, Duration::from_nanos(1)),
        ];
        for (delay, jitter) in huge {
            let expected = FaultRuleError::DelayTooLong {
                delay,
                jitter,
                delay_max: DELAY_MAX,
            };
            assert_eq!(delay_rule(delay, jitter).validate(), Err(expected));
        }
        let at_the_limit = delay_rule(DELAY_MAX - Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(at_the_limit.validate(), Ok(()));
    }

    /// `rules` is public, so a set that skipped `add` can reach the transport: judging it
    /// saturates instead of panicking.
    #[test]
    fn unchecked_huge_delays_saturate_when_judged() {
        let huge = FaultRule::Delay {
            a: N1,
            b: N2,
            delay: Duration::MAX,
            jitter: Duration::MAX,
        };
        let faults = FaultRules {
            rules: vec![huge.clone(), huge],
        };
        let mut rng = SeededRng::new(3);
        assert_eq!(
            faults.verdict(N1, N2, &mut rng),
            Verdict::Deliver {
                delay: Duration::MAX
            }
        );
    }
}
