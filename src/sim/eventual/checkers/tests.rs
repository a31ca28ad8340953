//! The checkers on hand-made histories: each must pass a correct outcome and flag a wrong one.

use super::*;

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn clock(dots: &[(u64, u64)]) -> VClock<NodeId> {
    dots.iter()
        .map(|(actor, counter)| Dot::new(n(*actor), *counter))
        .collect()
}

fn counter(id: u64, amount: i64, outcome: Outcome) -> CounterWrite {
    CounterWrite {
        id,
        amount,
        outcome,
    }
}

#[test]
fn counter_accepts_acked_plus_any_subset_of_indeterminate() {
    let writes = [
        counter(1, 5, Outcome::Acked),
        counter(2, -2, Outcome::Acked),
        counter(3, 7, Outcome::Indeterminate),
        counter(4, -4, Outcome::Pending),
        counter(5, 100, Outcome::Failed),
    ];
    for ok in [3, 10, -1, 6] {
        assert!(check_counter(b"k", &writes, ok).is_empty(), "{ok}");
    }
    for bad in [2, 4, 103, 0] {
        let violations = check_counter(b"k", &writes, bad);
        assert_eq!(violations.len(), 1, "{bad}");
        assert!(violations[0].starts_with("lost-ack: counter key k"));
    }
}

fn add(id: u64, member: &str, dot: (u64, u64), outcome: Outcome) -> SetWrite {
    SetWrite::Add {
        id,
        member: member.as_bytes().to_vec(),
        dot: Some(Dot::new(n(dot.0), dot.1)),
        outcome,
    }
}

fn remove(id: u64, member: &str, observed: &[(u64, u64)], outcome: Outcome) -> SetWrite {
    SetWrite::Remove {
        id,
        member: member.as_bytes().to_vec(),
        observed: clock(observed),
        outcome,
    }
}

fn members(names: &[&str]) -> BTreeSet<Vec<u8>> {
    names.iter().map(|m| m.as_bytes().to_vec()).collect()
}

#[test]
fn set_keeps_unobserved_acked_adds_and_drops_removed_ones() {
    let writes = [
        add(1, "a", (1, 1), Outcome::Acked),
        add(2, "b", (2, 1), Outcome::Acked),
        // Observed only n2's first add of b: the concurrent add (n1, 2) survives it.
        remove(3, "b", &[(2, 1)], Outcome::Acked),
        add(4, "b", (1, 2), Outcome::Acked),
        add(5, "c", (3, 1), Outcome::Indeterminate),
        remove(6, "a", &[], Outcome::Acked),
    ];
    assert!(check_set(b"s", &writes, &members(&["a", "b"])).is_empty());
    assert!(check_set(b"s", &writes, &members(&["a", "b", "c"])).is_empty());
    let lost = check_set(b"s", &writes, &members(&["b"]));
    assert_eq!(lost.len(), 1);
    assert!(lost[0].contains("acked add #1"), "{lost:?}");
    let phantom = check_set(b"s", &writes, &members(&["a", "b", "z"]));
    assert_eq!(phantom.len(), 1);
    assert!(phantom[0].starts_with("phantom"));
}

#[test]
fn set_flags_a_removed_member_that_comes_back() {
    let writes = [
        add(1, "a", (1, 1), Outcome::Acked),
        add(2, "a", (2, 1), Outcome::Indeterminate),
        remove(3, "a", &[(1, 1), (2, 1)], Outcome::Acked),
    ];
    assert!(check_set(b"s", &writes, &members(&[])).is_empty());
    let back = check_set(b"s", &writes, &members(&["a"]));
    assert_eq!(back.len(), 1);
    assert!(back[0].starts_with("resurrection"), "{back:?}");
    // An indeterminate remove may not have applied: the member may stay, or go.
    let maybe = [
        add(1, "a", (1, 1), Outcome::Acked),
        remove(2, "a", &[(1, 1)], Outcome::Indeterminate),
    ];
    assert!(check_set(b"s", &maybe, &members(&["a"])).is_empty());
    assert!(check_set(b"s", &maybe, &members(&[])).is_empty());
}

fn lww(id: u64, value: Option<&str>, stamp: u64, outcome: Outcome) -> LwwWrite<u64> {
    LwwWrite {
        id,
        value: value.map(|v| v.as_bytes().to_vec()),
        stamp,
        outcome,
    }
}

#[test]
fn lww_takes_the_greatest_stamp_among_acked_and_maybe_indeterminate() {
    let writes = [
        lww(1, Some("v1"), 10, Outcome::Acked),
        lww(2, Some("v2"), 30, Outcome::Acked),
        lww(3, Some("v3"), 40, Outcome::Indeterminate),
        lww(4, Some("v4"), 20, Outcome::Indeterminate),
        lww(5, Some("v5"), 50, Outcome::Failed),
    ];
    assert!(check_lww(b"k", &writes, Some((Some(b"v2"), &30))).is_empty());
    assert!(check_lww(b"k", &writes, Some((Some(b"v3"), &40))).is_empty());
    let older = check_lww(b"k", &writes, Some((Some(b"v4"), &20)));
    assert!(
        older.len() == 1 && older[0].contains("acked write #2"),
        "{older:?}"
    );
    let failed = check_lww(b"k", &writes, Some((Some(b"v5"), &50)));
    assert!(failed[0].contains("failed write #5"), "{failed:?}");
    let wrong_value = check_lww(b"k", &writes, Some((Some(b"v1"), &30)));
    assert!(wrong_value[0].starts_with("phantom"), "{wrong_value:?}");
    assert!(!check_lww(b"k", &writes, None).is_empty());
}

#[test]
fn lww_delete_that_wins_never_resurrects() {
    let writes = [
        lww(1, Some("v1"), 10, Outcome::Acked),
        lww(2, None, 20, Outcome::Acked),
        lww(3, Some("v3"), 15, Outcome::Indeterminate),
    ];
    assert!(check_lww(b"k", &writes, Some((None, &20))).is_empty());
    assert!(
        check_lww(b"k", &writes, None).is_empty(),
        "collected tombstone"
    );
    let back = check_lww(b"k", &writes, Some((Some(b"v1"), &10)));
    assert!(
        back.len() == 1 && back[0].starts_with("resurrection"),
        "{back:?}"
    );
    let shared = [
        lww(1, Some("v1"), 10, Outcome::Acked),
        lww(2, Some("v2"), 10, Outcome::Indeterminate),
    ];
    let hlc = check_lww(b"k", &shared, Some((Some(b"v1"), &10)));
    assert!(hlc[0].starts_with("hlc"), "{hlc:?}");
}

#[test]
fn lww_read_reflects_a_write_at_or_after_its_stamp() {
    let writes = [lww(1, Some("v1"), 10, Outcome::Acked)];
    assert!(lww_reflects(&writes, &10, Some(&10)));
    assert!(lww_reflects(&writes, &10, Some(&12)));
    assert!(!lww_reflects(&writes, &10, Some(&9)));
    assert!(!lww_reflects(&writes, &10, None));
    let deleted = [
        lww(1, Some("v1"), 10, Outcome::Acked),
        lww(2, None, 11, Outcome::Indeterminate),
    ];
    assert!(lww_reflects(&deleted, &10, None));
}

fn mv(id: u64, value: &str, dots: &[(u64, u64)], outcome: Outcome) -> MvWrite {
    MvWrite {
        id,
        value: (!value.is_empty()).then(|| value.as_bytes().to_vec()),
        clock: clock(dots),
        outcome,
    }
}

fn sibling(value: &str, dots: &[(u64, u64)]) -> Sibling {
    (
        clock(dots),
        (!value.is_empty()).then(|| value.as_bytes().to_vec()),
    )
}

#[test]
fn mvreg_siblings_are_exactly_the_maximal_writes() {
    let writes = [
        mv(1, "a", &[(1, 1)], Outcome::Acked),
        mv(2, "b", &[(2, 1)], Outcome::Acked),
        // Read a and b, then wrote c: supersedes both.
        mv(3, "c", &[(1, 2), (2, 1)], Outcome::Acked),
        mv(4, "d", &[(3, 1)], Outcome::Acked),
        mv(5, "e", &[(3, 2)], Outcome::Indeterminate),
    ];
    let good = [sibling("c", &[(1, 2), (2, 1)]), sibling("d", &[(3, 1)])];
    assert!(check_mvreg(b"m", &writes, &good).is_empty());
    let with_e = [sibling("c", &[(1, 2), (2, 1)]), sibling("e", &[(3, 2)])];
    assert!(check_mvreg(b"m", &writes, &with_e).is_empty());
    let dropped = [sibling("c", &[(1, 2), (2, 1)])];
    let lost = check_mvreg(b"m", &writes, &dropped);
    assert!(
        lost.len() == 1 && lost[0].contains("acked write #4"),
        "{lost:?}"
    );
    let stale = [
        sibling("a", &[(1, 1)]),
        sibling("c", &[(1, 2), (2, 1)]),
        sibling("d", &[(3, 1)]),
    ];
    let stale = check_mvreg(b"m", &writes, &stale);
    assert!(
        stale.iter().any(|v| v.contains("not concurrent")),
        "{stale:?}"
    );
    assert!(stale.iter().any(|v| v.contains("survives")), "{stale:?}");
    let wrong_clock = [sibling("c", &[(1, 2)]), sibling("d", &[(3, 1)])];
    assert!(!check_mvreg(b"m", &writes, &wrong_clock).is_empty());
}

#[test]
fn mvreg_delete_supersedes_and_may_be_collected() {
    let writes = [
        mv(1, "a", &[(1, 1)], Outcome::Acked),
        mv(2, "b", &[(2, 1)], Outcome::Acked),
        // A delete (empty value) that read a only.
        mv(3, "", &[(1, 1), (3, 1)], Outcome::Acked),
    ];
    let tomb = [sibling("", &[(1, 1), (3, 1)]), sibling("b", &[(2, 1)])];
    assert!(check_mvreg(b"m", &writes, &tomb).is_empty());
    // The delete was collected once stable, then b's state... b must stay.
    assert!(check_mvreg(b"m", &writes, &[sibling("b", &[(2, 1)])]).is_empty());
    let lost = check_mvreg(b"m", &writes, &[]);
    assert!(lost.len() == 1 && lost[0].contains("#2"), "{lost:?}");
    let back = check_mvreg(
        b"m",
        &writes,
        &[sibling("a", &[(1, 1)]), sibling("b", &[(2, 1)])],
    );
    assert!(back.iter().any(|v| v.contains("survives")), "{back:?}");
    let read_ctx = clock(&[(2, 1)]);
    assert!(
        mv_reflects(&writes, &writes[0], &[], &read_ctx),
        "deleted since"
    );
    assert!(mv_reflects(
        &writes,
        &writes[1],
        &[b"b".to_vec()],
        &read_ctx
    ));
    assert!(!mv_reflects(&writes, &writes[1], &[], &clock(&[(1, 1)])));
}

#[test]
fn set_read_reflects_adds_and_removes() {
    let writes = [
        add(1, "a", (1, 1), Outcome::Acked),
        remove(2, "a", &[(1, 1)], Outcome::Acked),
        add(3, "b", (2, 1), Outcome::Acked),
    ];
    let members =
        |names: &[&str]| -> Vec<Vec<u8>> { names.iter().map(|m| m.as_bytes().to_vec()).collect() };
    assert!(
        set_reflects(&writes, &writes[0], &members(&[])),
        "removed since"
    );
    assert!(set_reflects(&writes, &writes[1], &members(&["b"])));
    assert!(!set_reflects(&writes, &writes[1], &members(&["a"])));
    assert!(!set_reflects(&writes, &writes[2], &members(&["a"])));
}

#[test]
fn convergence_compares_every_key_and_root() {
    let state = |pairs: &[(&str, u32)]| -> BTreeMap<Vec<u8>, u32> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), *v))
            .collect()
    };
    let same = [
        (n(1), state(&[("a", 1), ("b", 2)]), 7u64),
        (n(2), state(&[("a", 1), ("b", 2)]), 7u64),
    ];
    assert!(check_convergence("ks", &same).is_empty());
    let differ = [
        (n(1), state(&[("a", 1), ("b", 2)]), 7u64),
        (n(2), state(&[("a", 1)]), 7u64),
        (n(3), state(&[("a", 1), ("b", 2)]), 8u64),
    ];
    let violations = check_convergence("ks", &differ);
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[0].contains("key b: n1 has Some(2), n2 has None"));
    assert!(violations[1].contains("Merkle roots differ"));
}

// Story: a whole-cluster crash caught a write in its node's pending overlay; on restart the
// HLC resumed from the durable meta and gave the next write the same stamp. The first write
// was never visible anywhere, so sharing its stamp is no violation, but it must never appear.
#[test]
fn a_write_lost_before_it_was_durable_never_appears_and_may_share_its_stamp() {
    let writes = [
        lww(1, Some("gone"), 10, Outcome::Lost),
        lww(2, Some("kept"), 10, Outcome::Acked),
    ];
    assert!(check_lww(b"k", &writes, Some((Some(b"kept"), &10))).is_empty());
    let back = check_lww(b"k", &writes, Some((Some(b"gone"), &10)));
    assert!(back.iter().any(|v| v.starts_with("phantom")), "{back:?}");
    let counters = [counter(1, 5, Outcome::Acked), counter(2, 7, Outcome::Lost)];
    assert!(check_counter(b"c", &counters, 5).is_empty());
    assert!(!check_counter(b"c", &counters, 12).is_empty());
}
