//! The eventual-consistency simulator: a cluster of `AntiEntropy` engines under faults,
//! simulated clients, and the checkers.

pub mod checkers;
pub mod history;
