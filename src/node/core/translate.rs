//! From the client protocol to the cores' own types and back: pure functions, no state.

use crate::eventual::{self, HlcTimestamp, Op};
use crate::protocol::{Answer, ClientError, Operation, WriteTime};
use crate::strong::{ClientId, Command, CommandError, Outcome};
use crate::types::{LogIndex, NodeId};
use bytes::Bytes;

/// The strong command of a checked request (gets and scans never reach here as commands,
/// except scans through the log).
pub(super) fn strong_command(operation: Operation) -> Command {
    match operation {
        Operation::Put { key, value, .. } => Command::Put { key, value },
        Operation::Delete { key, .. } => Command::Delete { key },
        Operation::Cas {
            key,
            expected,
            value,
        } => Command::Cas {
            key,
            expected,
            value,
        },
        Operation::Scan {
            prefix,
            limit,
            after,
        } => Command::Scan {
            prefix,
            limit,
            after,
        },
        Operation::Get { key } => Command::Get { key },
        // `check_request` refused these for strong keyspaces.
        Operation::Add { key, .. }
        | Operation::SetAdd { key, .. }
        | Operation::SetRemove { key, .. } => Command::Get { key },
        // Watches are served from the watch history, never through the log.
        Operation::Watch { prefix, .. } => Command::Get { key: prefix },
        Operation::Txn {
            compares,
            success,
            failure,
        } => Command::Txn {
            compares,
            success,
            failure,
        },
        Operation::TxnStep(step) => Command::TxnStep(step),
    }
}

pub(super) fn outcome_answer(outcome: Outcome) -> (Answer, Option<LogIndex>) {
    match outcome {
        Outcome::Put { revision } | Outcome::Delete { revision, .. } => {
            (Answer::Written { revision }, Some(revision))
        }
        Outcome::Cas {
            revision,
            succeeded,
            current,
        } => (
            Answer::Cas {
                succeeded,
                revision,
                current,
            },
            Some(revision),
        ),
        Outcome::Txn {
            revision,
            succeeded,
        } => (
            Answer::Txn {
                succeeded,
                revision,
            },
            Some(revision),
        ),
        Outcome::TxnStep { revision, outcome } => {
            (Answer::TxnStep { revision, outcome }, Some(revision))
        }
        Outcome::Get { current } => (Answer::Strong(current), None),
        Outcome::Scan { entries, more } => {
            // The machine never cuts a page short before its first entry.
            let next = entries.last().map(|(key, _)| key.clone()).filter(|_| more);
            (Answer::Scan { entries, next }, None)
        }
    }
}

pub(super) fn command_error(error: CommandError) -> ClientError {
    match error {
        CommandError::TooLarge {
            what,
            bytes,
            bytes_max,
        } => ClientError::TooLarge {
            what: format!("{what:?}").to_lowercase(),
            bytes,
            bytes_max,
        },
        CommandError::ScanLimit { limit, limit_max } => ClientError::ScanLimit { limit, limit_max },
        CommandError::AlreadyAcknowledged {
            seq, first_unacked, ..
        } => ClientError::AlreadyAcknowledged { seq, first_unacked },
        CommandError::SessionExpired { seq, .. } => ClientError::SessionExpired { seq },
        CommandError::TooManySessions { sessions_max } => {
            ClientError::TooManySessions { sessions_max }
        }
        CommandError::SessionFull { results, bytes, .. } => {
            ClientError::SessionFull { results, bytes }
        }
        CommandError::SessionsFull { bytes, bytes_max } => {
            ClientError::SessionsFull { bytes, bytes_max }
        }
        error @ (CommandError::TxnTooLong { .. }
        | CommandError::TxnDuplicateKey { .. }
        | CommandError::Locked { .. }
        | CommandError::ReservedKey { .. }
        | CommandError::BadTxnStep { .. }) => crate::protocol::txn_error(error),
    }
}

/// The `lww` stamp of a write whose client gave its time: the client's (admitted, so
/// certificate-bound) session id breaks ties, so two clients' writes never share a stamp.
pub(super) fn client_stamp(time: WriteTime, client: ClientId) -> HlcTimestamp {
    HlcTimestamp {
        physical_ms: time.physical_ms,
        logical: time.logical,
        node: NodeId(client.0),
    }
}

/// The engine operations of a checked eventual write: one per set member.
pub(super) fn eventual_ops(
    operation: Operation,
    value_type: eventual::ValueType,
) -> Vec<(Bytes, Op)> {
    let mvreg = value_type == eventual::ValueType::MvReg;
    match operation {
        Operation::Put {
            key,
            value,
            context,
        } if mvreg => {
            vec![(key, Op::MvPut { value, context })]
        }
        Operation::Put { key, value, .. } => vec![(key, Op::LwwPut(value))],
        Operation::Delete { key, context } if mvreg => vec![(key, Op::MvDelete { context })],
        Operation::Delete { key, .. } => vec![(key, Op::LwwDelete)],
        Operation::Add { key, by } => vec![(key, Op::CounterAdd(by))],
        Operation::SetAdd { key, members } => members
            .into_iter()
            .map(|m| (key.clone(), Op::SetAdd(m)))
            .collect(),
        Operation::SetRemove {
            key,
            members,
            context,
        } => members
            .into_iter()
            .map(|member| {
                let seen = context.clone();
                (key.clone(), Op::SetRemove { member, seen })
            })
            .collect(),
        Operation::Get { .. }
        | Operation::Cas { .. }
        | Operation::Scan { .. }
        | Operation::Watch { .. }
        | Operation::Txn { .. }
        | Operation::TxnStep(_) => Vec::new(),
    }
}

pub(super) fn write_error(error: eventual::WriteError) -> ClientError {
    use eventual::WriteError as E;
    match error {
        E::QuorumNotReached { acked, needed } => ClientError::NotEnoughReplicas {
            acked: u32::try_from(acked).unwrap_or(u32::MAX),
            needed: u32::try_from(needed).unwrap_or(u32::MAX),
        },
        E::KeyTooLarge { bytes, bytes_max } => too_large("key", bytes, bytes_max),
        E::ValueTooLarge { bytes, bytes_max } => too_large("value", bytes, bytes_max),
        E::StateTooLarge { bytes, bytes_max } => too_large("key state", bytes, bytes_max),
        E::CounterOverflow { value, by } => ClientError::CounterOverflow { value, by },
        E::CounterExhausted { by } => ClientError::CounterExhausted { by },
        E::ContextAhead {
            node,
            counter,
            seen,
        } => ClientError::ContextAhead {
            node,
            counter,
            seen,
        },
        E::StampAhead {
            ahead_ms,
            skew_max_ms,
        } => ClientError::WriteTimeAhead {
            ahead_ms,
            skew_max_ms,
        },
        E::StampBehind {
            behind_ms,
            skew_max_ms,
        } => ClientError::WriteTimeBehind {
            behind_ms,
            skew_max_ms,
        },
        E::Backpressure { .. } => ClientError::Backpressure,
        other => ClientError::Malformed {
            reason: other.to_string(),
        },
    }
}

pub(super) fn read_error(error: eventual::ReadError) -> ClientError {
    use eventual::ReadError as E;
    match error {
        E::KeyTooLarge { bytes, bytes_max } => too_large("key", bytes, bytes_max),
        E::Backpressure { .. } => ClientError::Backpressure,
        E::SessionTimeout { .. } => ClientError::SessionNotSeen,
        E::QuorumNotReached { answered, needed } => ClientError::QuorumNotReached {
            answered: u32::try_from(answered).unwrap_or(u32::MAX),
            needed: u32::try_from(needed).unwrap_or(u32::MAX),
        },
    }
}

pub(super) fn too_large(what: &str, bytes: usize, bytes_max: usize) -> ClientError {
    ClientError::TooLarge {
        what: what.to_string(),
        bytes,
        bytes_max,
    }
}
