//! The deterministic simulator: shared parts (seeded randomness, clocks, network, faults) are
//! being written on main; engine harnesses live in `strong.rs` and `eventual.rs`.
