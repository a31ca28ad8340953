//! The end-of-run checks (linearizability per key, every read against the reference log)
//! and the report with its one-line summary.

use super::*;

/// The keys' states along the committed log, replayed from what the cluster applied.
pub(super) struct Reference {
    /// Per key: (index, state after it) for every index that changed it, and the last index
    /// replayed (reads beyond it are not checked).
    timelines: BTreeMap<Bytes, BTreeMap<u64, Option<Versioned>>>,
    replayed: u64,
}

impl Reference {
    pub(super) fn replay(checker: &Checker, config: &MachineConfig, keys: &[Bytes]) -> Reference {
        let mut machine = StrongMachine::new(config.clone());
        let mut timelines: BTreeMap<Bytes, BTreeMap<u64, Option<Versioned>>> = keys
            .iter()
            .map(|key| (key.clone(), BTreeMap::from([(0, None)])))
            .collect();
        for (index, entry) in &checker.applied {
            if index.0 != machine.applied().0 + 1 {
                break;
            }
            match &entry.command {
                Some(command) => {
                    let Ok(response) = machine.apply(*index, command) else {
                        continue;
                    };
                    let _ = response;
                    let touched = StrongRequest::decode(command)
                        .map(|request| request.command.key().clone())
                        .ok();
                    if let Some(timeline) =
                        touched.and_then(|key| timelines.get_mut(&key).map(|t| (t, key)))
                    {
                        let (timeline, key) = timeline;
                        timeline.insert(index.0, machine.get(&key).ok().flatten());
                    }
                }
                None => machine.skip(*index),
            }
        }
        Reference {
            timelines,
            replayed: machine.applied().0,
        }
    }

    /// The key's state at `applied`, if the reference reaches that far.
    pub(super) fn at(&self, key: &Bytes, applied: u64) -> Option<Option<Versioned>> {
        if applied > self.replayed {
            return None;
        }
        let timeline = self.timelines.get(key)?;
        timeline
            .range(..=applied)
            .next_back()
            .map(|(_, state)| state.clone())
    }
}

impl Run {
    pub(super) fn report(&mut self) -> SeedReport {
        let excuse_lease = self.fault_stats.jumps_beyond > 0;
        // The history is checked even when a step checker already fired (the run stopped
        // there; what was in flight is indeterminate), so a report names every symptom.
        let include = |op: &crate::sim::history::Operation| match op.call {
            Call::Get {
                level: ReadPath::Stale,
            } => false,
            Call::Get {
                level: ReadPath::Lease,
            } => !excuse_lease,
            _ => true,
        };
        let lin = check_history(&self.history, include, STEPS_PER_KEY_DEFAULT);
        let mut violations = std::mem::take(&mut self.world.checker.violations);
        violations.extend(lin.violations.iter().cloned());
        violations.extend(self.check_reads());
        violations.append(&mut self.liveness);
        let summary = self.summary(&lin, excuse_lease);
        SeedReport {
            seed: self.config.seed,
            violations,
            summary,
        }
    }

    /// Every read against the reference log, and applied indexes per node incarnation.
    pub(super) fn check_reads(&self) -> Vec<String> {
        let reference = Reference::replay(&self.world.checker, &self.machine_config, &self.keys);
        let mut violations = Vec::new();
        let mut last_applied: BTreeMap<(NodeId, u64), u64> = BTreeMap::new();
        let mut reads: Vec<_> = self
            .history
            .operations()
            .iter()
            .filter_map(|op| match &op.completion {
                Completion::Ok {
                    event,
                    returned: returned @ Return::Get { .. },
                    ..
                } => Some((*event, op, returned)),
                _ => None,
            })
            .collect();
        reads.sort_by_key(|(event, _, _)| *event);
        for (_, op, returned) in reads {
            let Return::Get {
                current,
                node,
                applied,
                incarnation,
            } = returned
            else {
                continue;
            };
            let last = last_applied.entry((*node, *incarnation)).or_default();
            if *applied < *last {
                violations.push(format!(
                    "read went back in time on {node}: applied {applied} after {last}: {op}"
                ));
            }
            *last = (*last).max(*applied);
            if let Some(expected) = reference.at(&op.key, *applied) {
                let got = current
                    .as_ref()
                    .map(|seen| (&seen.value, seen.mod_revision));
                let want = expected.as_ref().map(|v| (&v.value, v.mod_revision.0));
                if got != want {
                    violations.push(format!(
                        "read does not match the reference log at applied {applied} \
                         (expected {want:?}): {op}"
                    ));
                }
            }
        }
        violations.truncate(5);
        violations
    }

    pub(super) fn summary(
        &self,
        lin: &crate::sim::linearizability::LinearizabilityReport,
        excuse_lease: bool,
    ) -> String {
        let (ok, indeterminate, failed) = self.history.counts();
        let stats = self.world.net.stats();
        let faults = &self.fault_stats;
        let retries: u64 = self.clients.iter().map(|c| c.stats.retries).sum();
        let expired: u64 = self.clients.iter().map(|c| c.stats.sessions_expired).sum();
        let mut reads = [0u64; 4];
        for client in &self.clients {
            for (total, count) in reads.iter_mut().zip(client.stats.reads_by_level) {
                *total += count;
            }
        }
        let lin = format!(
            "lin: {} keys {} ops {} inconclusive",
            lin.keys,
            lin.operations,
            lin.inconclusive.len()
        );
        format!(
            "seed {} n={} clients={}{}: ops ok={ok} indeterminate={indeterminate} \
             failed={failed} retries={retries} sessions-expired={expired} reads(lin/lease/follower/stale)={}/{}/{}/{} | \
             leaders={} | faults: partitions={} crashes={} (after votes={}) pauses={} mutes={} jumps={} (beyond={}) \
             membership={} | msgs sent={} delivered={} lost={} cut={} | applied={} | \
             sim {:.1}s | {lin}{}",
            self.config.seed,
            self.config.nodes,
            self.clients.len(),
            if self.pre_vote { "" } else { " no-prevote" },
            reads[0],
            reads[1],
            reads[2],
            reads[3],
            self.world.checker.leaders_elected(),
            faults.partitions,
            faults.crashes,
            faults.vote_crashes,
            faults.pauses,
            faults.leader_mutes,
            faults.jumps,
            faults.jumps_beyond,
            faults.membership_changes,
            stats.sent,
            stats.delivered,
            stats.lost,
            stats.cut_by_partition,
            self.world.checker.applied.len(),
            self.now.as_nanos() as f64 / 1e9,
            if excuse_lease {
                " (lease reads excused: clock jumped beyond the bound)"
            } else {
                ""
            }
        )
    }
}
