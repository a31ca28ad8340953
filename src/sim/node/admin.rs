//! The admin client: creates the base keyspaces first, then carries out a plan drawn from the
//! seed over the safety phase (create extra keyspaces, add the spare node, drop the extras,
//! remove the spare, stop it), one action at a time, finishing the plan in the liveness
//! phase if the faults held it up.
//!
//! Like the client library it follows `NotLeader` hints, moves to another node when one is
//! unavailable or silent, and never gives up. A catalog change is not deduplicated across
//! attempts (each attempt is a new proposal), so after an attempt that may have applied, a
//! retry's `KeyspaceExists` (or `UnknownKeyspace` for a drop, `MemberExists`,
//! `UnknownMember`) means done; without such an attempt it is a violation.

use super::ATTEMPT_TIMEOUT;
use super::catalog::{Catalog, Stage, base_keyspaces};
use crate::eventual::ValueType;
use crate::protocol::admin::{AdminAnswer, AdminError, AdminRequest, FromNode, ToNode};
use crate::protocol::{ClientError, KeyspaceMode, UnavailableReason};
use crate::rng::SeededRng;
use crate::types::{Instant, NodeId};
use std::collections::VecDeque;
use std::time::Duration;

/// One step of the admin plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Create {
        name: String,
        mode: KeyspaceMode,
        base: bool,
    },
    Drop {
        name: String,
    },
    AddSpare,
    RemoveSpare,
    /// The removed spare is shut down (no request: the operator stops the process).
    StopSpare,
}

/// What the harness must do for the admin client.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) sends: Vec<(NodeId, u64, ToNode)>,
    pub(crate) boot_spare: bool,
    pub(crate) stop_spare: bool,
    /// Findings, each with the node that answered (the harness adds its view).
    pub(crate) violations: Vec<(Option<NodeId>, String)>,
}

/// The action in progress.
#[derive(Debug)]
struct Active {
    action: Action,
    request: AdminRequest,
    target: NodeId,
    /// The attempt in flight times out at this; `None` while backing off.
    waiting: Option<Instant>,
    /// Some attempt may have applied the change.
    uncertain: bool,
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AdminStats {
    pub(crate) done: u64,
    pub(crate) attempts: u64,
}

pub(crate) struct AdminClient {
    rng: SeededRng,
    nodes: Vec<NodeId>,
    spare: NodeId,
    /// Actions to come, each not before its time.
    plan: VecDeque<(Instant, Action)>,
    active: Option<Active>,
    /// The next attempt (or the next action) not before this.
    next_at: Instant,
    hint: Option<NodeId>,
    attempt: u64,
    spare_member: bool,
    pub(crate) stats: AdminStats,
}

impl AdminClient {
    pub(crate) fn new(
        mut rng: SeededRng,
        nodes: Vec<NodeId>,
        spare: NodeId,
        horizon: Instant,
    ) -> AdminClient {
        let plan = draw_plan(&mut rng, horizon);
        AdminClient {
            rng,
            nodes,
            spare,
            plan,
            active: None,
            next_at: Instant::ZERO,
            hint: None,
            attempt: 0,
            spare_member: false,
            stats: AdminStats::default(),
        }
    }

    pub(crate) fn spare_is_member(&self) -> bool {
        self.spare_member
    }

    /// Whether the plan is carried out.
    pub(crate) fn finished(&self) -> bool {
        self.active.is_none() && self.plan.is_empty()
    }

    /// The liveness phase: what is left of the plan runs without waiting for its times.
    pub(crate) fn enter_liveness(&mut self, now: Instant) {
        for (at, _) in &mut self.plan {
            *at = (*at).min(now);
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.active {
            Some(active) => Some(active.waiting.unwrap_or(self.next_at)),
            None => self.plan.front().map(|(at, _)| (*at).max(self.next_at)),
        }
    }

    /// Acts at `now`: retries after a timeout or a backoff, or starts the next action.
    pub(crate) fn act(&mut self, now: Instant, catalog: &mut Catalog) -> Outcome {
        let mut out = Outcome::default();
        if let Some(active) = &mut self.active {
            if let Some(timeout) = active.waiting {
                if timeout > now {
                    return out;
                }
                // Silence: the change may have applied; try elsewhere.
                active.waiting = None;
                active.uncertain = true;
                active.target = *self.rng.pick(&self.nodes);
                self.hint = None;
            }
            if self.next_at <= now {
                self.send(now, &mut out);
            }
            return out;
        }
        let Some((at, _)) = self.plan.front() else {
            return out;
        };
        if (*at).max(self.next_at) > now {
            return out;
        }
        let (_, action) = self.plan.pop_front().expect("looked at the front");
        self.start(now, action, catalog, &mut out);
        out
    }

    fn start(&mut self, now: Instant, action: Action, catalog: &mut Catalog, out: &mut Outcome) {
        let request = match &action {
            Action::Create { name, mode, base } => {
                catalog.set_stage(name, *mode, *base, Stage::Creating);
                AdminRequest::CreateKeyspace {
                    name: name.clone(),
                    mode: *mode,
                }
            }
            Action::Drop { name } => {
                // From here on a data request may legitimately meet `UnknownKeyspace`.
                if let Some(keyspace) = catalog.keyspaces.get_mut(name) {
                    keyspace.stage = Stage::Dropping;
                }
                AdminRequest::DropKeyspace { name: name.clone() }
            }
            Action::AddSpare => {
                out.boot_spare = true;
                AdminRequest::AddMember {
                    id: self.spare,
                    address: super::address(self.spare),
                }
            }
            Action::RemoveSpare => AdminRequest::RemoveMember { id: self.spare },
            Action::StopSpare => {
                out.stop_spare = true;
                self.stats.done += 1;
                return;
            }
        };
        let target = match self.hint {
            Some(hint) => hint,
            None => *self.rng.pick(&self.nodes),
        };
        self.active = Some(Active {
            action,
            request,
            target,
            waiting: None,
            uncertain: false,
        });
        self.send(now, out);
    }

    fn send(&mut self, now: Instant, out: &mut Outcome) {
        let active = self.active.as_mut().expect("an action is active");
        self.attempt += 1;
        self.stats.attempts += 1;
        active.waiting = Some(now + ATTEMPT_TIMEOUT);
        let request = ToNode::Admin(active.request.clone());
        out.sends.push((active.target, self.attempt, request));
    }

    /// A node answered attempt `id`. Answers to older attempts are ignored.
    pub(crate) fn on_answer(
        &mut self,
        now: Instant,
        id: u64,
        answer: FromNode,
        catalog: &mut Catalog,
    ) -> Outcome {
        let mut out = Outcome::default();
        let Some(active) = &mut self.active else {
            return out;
        };
        if id != self.attempt || active.waiting.is_none() {
            return out;
        }
        active.waiting = None;
        let result = match answer {
            FromNode::Admin(result) => result,
            FromNode::Data(response) => {
                let text = format!(
                    "protocol: an admin request was answered with a data frame {response:?}"
                );
                out.violations.push((Some(active.target), text));
                self.finish(now, catalog);
                return out;
            }
        };
        match result {
            Ok(AdminAnswer::Done) => self.finish(now, catalog),
            Err(error) => self.refused(now, error, catalog, &mut out),
            Ok(other) => {
                let text = format!("protocol: {:?} was answered {other:?}", active.request);
                out.violations.push((Some(active.target), text));
                self.finish(now, catalog);
            }
        }
        out
    }

    fn refused(
        &mut self,
        now: Instant,
        error: AdminError,
        catalog: &mut Catalog,
        out: &mut Outcome,
    ) {
        let active = self.active.as_mut().expect("an action is active");
        let already = matches!(
            (&active.action, &error),
            (Action::Create { .. }, AdminError::KeyspaceExists { .. })
                | (Action::Drop { .. }, AdminError::UnknownKeyspace { .. })
                | (Action::AddSpare, AdminError::MemberExists { .. })
                | (Action::RemoveSpare, AdminError::UnknownMember { .. })
        );
        if already {
            if !active.uncertain {
                // A node that judges the change against a catalog it has not caught up on.
                let kind = match active.action {
                    Action::AddSpare | Action::RemoveSpare => "membership",
                    _ => "catalog",
                };
                let text = format!(
                    "{kind}: {} answered {:?} with {error:?} though no earlier attempt could \
                     have applied it",
                    active.target, active.request
                );
                out.violations.push((Some(active.target), text));
            }
            self.finish(now, catalog);
            return;
        }
        // The rest are refusals any request may meet, retried; anything else ends the action.
        let error = match error {
            AdminError::Request(error) => error,
            other => {
                let text = format!("catalog: {:?} failed with {other:?}", active.request);
                out.violations.push((Some(active.target), text));
                self.finish(now, catalog);
                return;
            }
        };
        let (backoff_low, backoff_high) = match &error {
            ClientError::NotLeader {
                leader_hint: Some(leader),
                ..
            } => {
                self.hint = Some(*leader);
                active.target = *leader;
                (Duration::from_micros(500), Duration::from_millis(2))
            }
            ClientError::NotLeader { .. } | ClientError::Unavailable { .. } => {
                if let ClientError::Unavailable { reason } = &error {
                    // The library's rule: only a node that knows no leader surely did not
                    // append it.
                    active.uncertain |= *reason != UnavailableReason::NoLeader;
                }
                self.hint = None;
                active.target = *self.rng.pick(&self.nodes);
                (Duration::from_millis(10), Duration::from_millis(60))
            }
            ClientError::Timeout { may_have_applied } => {
                active.uncertain |= *may_have_applied;
                self.hint = None;
                active.target = *self.rng.pick(&self.nodes);
                (Duration::from_millis(1), Duration::from_millis(10))
            }
            ClientError::Backpressure => (Duration::from_millis(10), Duration::from_millis(40)),
            other => {
                let text = format!("catalog: {:?} failed with {other:?}", active.request);
                out.violations.push((Some(active.target), text));
                self.finish(now, catalog);
                return;
            }
        };
        self.next_at = now + self.rng.duration_between(backoff_low, backoff_high);
    }

    /// The action is done: the catalog view, the spare's membership and the plan follow.
    fn finish(&mut self, now: Instant, catalog: &mut Catalog) {
        let active = self.active.take().expect("an action is active");
        self.stats.done += 1;
        match active.action {
            Action::Create { name, .. } => {
                if let Some(keyspace) = catalog.keyspaces.get_mut(&name) {
                    keyspace.stage = Stage::Live;
                }
            }
            Action::Drop { name } => {
                if let Some(keyspace) = catalog.keyspaces.get_mut(&name) {
                    keyspace.stage = Stage::Dropped;
                }
            }
            Action::AddSpare => self.spare_member = true,
            Action::RemoveSpare => {
                self.spare_member = false;
                // Stopped a little later, as an operator would, once groups moved on.
                let at = now + self.rng.duration_between(ms(300), ms(1500));
                self.plan.push_front((at, Action::StopSpare));
            }
            Action::StopSpare => {}
        }
        self.next_at = now + self.rng.duration_between(ms(1), ms(20));
    }
}

/// The seed's plan: the base keyspaces at once, then two extra keyspaces created and
/// dropped, with the spare added and removed in between on most seeds.
fn draw_plan(rng: &mut SeededRng, horizon: Instant) -> VecDeque<(Instant, Action)> {
    let strong = rng.range_u64(1, 2) as usize;
    let mut plan: VecDeque<(Instant, Action)> = base_keyspaces(strong)
        .into_iter()
        .map(|(name, mode)| {
            let action = Action::Create {
                name,
                mode,
                base: true,
            };
            (Instant::ZERO, action)
        })
        .collect();
    let extra_mode = |rng: &mut SeededRng| match rng.below(4) {
        0 => KeyspaceMode::Eventual(ValueType::Counter),
        1 => KeyspaceMode::Eventual(ValueType::Set),
        // A dropped paxos keyspace must leave no acceptor rows behind.
        2 => KeyspaceMode::Paxos,
        _ => KeyspaceMode::Strong,
    };
    let create = |name: &str, mode| Action::Create {
        name: name.to_string(),
        mode,
        base: false,
    };
    let drop = |name: &str| Action::Drop {
        name: name.to_string(),
    };
    let mut steps = vec![
        create("extra0", extra_mode(rng)),
        create("extra1", extra_mode(rng)),
    ];
    let membership = rng.chance(0.6);
    if membership {
        steps.push(Action::AddSpare);
    }
    steps.push(drop("extra0"));
    if membership {
        steps.push(Action::RemoveSpare);
    }
    steps.push(drop("extra1"));
    let span = horizon.saturating_duration_since(Instant::ZERO);
    let mut times: Vec<Instant> = steps
        .iter()
        .map(|_| Instant::ZERO + rng.duration_between(ms(300), span.max(ms(400))))
        .collect();
    times.sort();
    plan.extend(times.into_iter().zip(steps));
    plan
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}
