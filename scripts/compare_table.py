#!/usr/bin/env python3
"""Turns the per-case files of scripts/compare-etcd.sh into a Markdown report (stdout).

Reads, for each case NAME, WORK/NAME.json (the one JSON object `capdial bench --json` or
`capdial-etcd-bench --json` printed), NAME.rc, NAME.cmd and NAME.guard (the CPUGUARD line
of ../shared/peers/cpuguard.py, when it ran). Standard library only.
"""

import argparse
import json
import os
import platform
import subprocess
from datetime import datetime, timezone

# (row label, capdial case, etcd case, which operation of the result to use)
ROWS = [
    ("strong put vs etcd put", "capdial-put", "etcd-put", "write"),
    ("linearizable get vs linearizable get", "capdial-get-linearizable",
     "etcd-get-linearizable", "read"),
    ("lease get vs serializable get", "capdial-get-lease", "etcd-get-serializable-leader",
     "read"),
    ("stale get vs serializable get", "capdial-get-stale", "etcd-get-serializable-spread",
     "read"),
]


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def load_case(work, name):
    """The case's result object, exit status, command and CPU check (None where absent)."""
    text = read_text(os.path.join(work, name + ".json"))
    result = None
    if text:
        try:
            result = json.loads(text)
        except json.JSONDecodeError:
            result = None
    return {
        "name": name,
        "result": result,
        "rc": read_text(os.path.join(work, name + ".rc")),
        "cmd": read_text(os.path.join(work, name + ".cmd")),
        "guard": read_text(os.path.join(work, name + ".guard")),
    }


def pick_operation(result, kind):
    """The read operation, or for a write case the first operation that is not a read."""
    if not result:
        return None
    for op in result.get("operations", []):
        is_read = op.get("operation") == "read"
        if is_read == (kind == "read"):
            return op
    return None


def latency(op, field):
    lat = (op or {}).get("latency_ms") or {}
    return lat.get(field)


def fmt(value, digits=2):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio(numerator, denominator):
    if not numerator or not denominator:
        return "–"
    return f"{numerator / denominator:.2f}×"


def cells(case, kind):
    """ops/s, p50, p99 for one side; a failed case says so instead."""
    op = pick_operation(case["result"], kind)
    if op is None:
        why = f"failed (exit {case['rc']})" if case["rc"] not in (None, "0") else "no result"
        return [why, "", ""], None
    ops = fmt(op.get("throughput"), 0)
    if op.get("errors"):
        ops += f" ({op['errors']} err)"
    return [ops, fmt(latency(op, "p50"), 3), fmt(latency(op, "p99"), 3)], op


def main_table(work, concurrencies):
    lines = [
        "| case | c | capdial ops/s | capdial p50 ms | capdial p99 ms "
        "| etcd ops/s | etcd p50 ms | etcd p99 ms | throughput capdial/etcd "
        "| p50 etcd/capdial |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in concurrencies:
        for label, capdial_name, etcd_name, kind in ROWS:
            cap_cells, cap_op = cells(load_case(work, f"{capdial_name}-c{c}"), kind)
            etcd_cells, etcd_op = cells(load_case(work, f"{etcd_name}-c{c}"), kind)
            tput = ratio((cap_op or {}).get("throughput"), (etcd_op or {}).get("throughput"))
            p50 = ratio(latency(etcd_op, "p50"), latency(cap_op, "p50"))
            lines.append(f"| {label} | {c} | " + " | ".join(cap_cells + etcd_cells)
                         + f" | {tput} | {p50} |")
    return lines


def runs_table(work, concurrencies):
    """Every case that ran: exit status, errors, p99.9, and what else used the CPU."""
    names = []
    for c in concurrencies:
        for _, capdial_name, etcd_name, _ in ROWS:
            for name in (f"{etcd_name}-c{c}", f"{capdial_name}-c{c}"):
                if name not in names and os.path.exists(os.path.join(work, name + ".rc")):
                    names.append(name)
    lines = [
        "| case | exit | c / conns | routing | operation / level | ok | errors | p99.9 ms "
        "| max ms | CPU busy % | others % | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        case = load_case(work, name)
        guard = (case["guard"] or "").split(",")
        busy, others, verdict = (guard[2], guard[4], guard[7]) if len(guard) > 7 else ("", "", "")
        w = (case["result"] or {}).get("workload") or {}
        conns = f"{w.get('concurrency', '–')} / {w.get('connections', '–')}"
        routing = split_target((case["result"] or {}).get("target", ""))[1]
        ops = (case["result"] or {}).get("operations") or [{}]
        for op in ops:
            errors = op.get("errors")
            kinds = op.get("errors_by_kind") or {}
            if kinds:
                errors = f"{errors} ({', '.join(f'{k} {v}' for k, v in kinds.items())})"
            lines.append(
                f"| {name} | {case['rc']} | {conns} | {routing} | {op.get('operation', '–')} / {op.get('level', '–')} "
                f"| {op.get('ok', '–')} | {errors if errors is not None else '–'} "
                f"| {fmt(latency(op, 'p999'), 3)} | {fmt(latency(op, 'max'), 3)} "
                f"| {busy} | {others} | {verdict} |")
    return lines, names


def split_target(target):
    """'etcd ... at EPS (how connections go)' -> ('etcd ... at EPS', 'how connections go')."""
    if target.endswith(")") and " (" in target:
        system, routing = target[:-1].split(" (", 1)
        return system, routing
    return target, "–"


def command_output(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    model, memory = "", ""
    for line in (read_text("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    for line in (read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    commit = command_output("git", "rev-parse", "HEAD")
    dirty = command_output("git", "status", "--porcelain", "--untracked-files=no")
    etcd = command_output("etcd", "--version").splitlines()
    return [
        ("date (UTC)", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")),
        ("git commit", commit + (" (work tree has uncommitted changes)" if dirty else "")),
        ("CPU", f"{os.cpu_count()} × {model}"),
        ("memory", memory),
        ("kernel", platform.release()),
        ("etcd", etcd[0] if etcd else "not found"),
        ("rustc", command_output("rustc", "--version")),
    ]


def first_result(work, names, tool):
    for name in names:
        result = load_case(work, name)["result"]
        if result and result.get("tool") == tool:
            return result
    return None


def report(args):
    concurrencies = args.concurrency.split()
    runs, names = runs_table(args.work, concurrencies)
    out = ["# capdial vs etcd, side by side", ""]
    out += ["Same workload on both: uniform keys, closed loop, one system under load at a "
            "time, everything on loopback on this machine. Throughput ratio > 1 and p50 ratio "
            "> 1 both mean capdial is ahead.", ""]
    out += main_table(args.work, concurrencies)
    out += ["", "## Setup", "", "| item | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in machine()]
    for tool, label in (("etcd", "etcd target"), ("capdial", "capdial target")):
        result = first_result(args.work, names, tool)
        if result:
            out.append(f"| {label} | {split_target(result.get('target', ''))[0]} |")
            w = result.get("workload", {})
            out.append(f"| {tool} workload | {w.get('keys')} keys, {w.get('value_size')} B "
                       f"values, {w.get('distribution')}, {w.get('duration_s')} s measured "
                       f"after {w.get('warmup_s')} s warm-up |")
    out += ["", "## Runs", ""]
    out += ["CPU columns from `../shared/peers/cpuguard.py` (others = processes outside the "
            "measured system and its load generator; NOISY if others + unattributed > 10 %).",
            ""]
    out += runs
    out += ["", "## Commands", "", "```sh", args.command, ""]
    for name in names:
        out.append(f"# {name}")
        out.append(load_case(args.work, name)["cmd"] or "")
    out += ["```", "", f"Raw JSON, one object per case: `{args.jsonl}`", ""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", required=True, help="directory with the per-case files")
    parser.add_argument("--concurrency", required=True, help='e.g. "1 64"')
    parser.add_argument("--command", required=True, help="the command line to show")
    parser.add_argument("--jsonl", required=True, help="where the raw JSON lines are")
    print(report(parser.parse_args()))


if __name__ == "__main__":
    main()
