#!/usr/bin/env python3
"""Medians of bench/outside-check.sh's runs, per label, and the gateway's ratios to the floor.

    bench/outside-summary.py OUT.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


runs = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        line = line.strip()
        if line:
            r = json.loads(line)
            runs[r.get("label", "?")].append(r)


def figures(rs):
    def cpu_per_delivery(r):
        cpu = (r.get("server") or {}).get("cpu_s_publish")
        return cpu / r["delivered"] * 1e6 if cpu is not None and r.get("delivered") else None

    return {
        "runs": len(rs),
        "kib_per_conn": median([r.get("rss_per_conn_kb") for r in rs]),
        "deliveries_per_s": median([r.get("deliveries_per_sec") for r in rs]),
        "p99_ms": median([((r.get("latency_us") or {}).get("p99") or 0) / 1000 for r in rs]),
        "cpu_us_per_delivery": median([cpu_per_delivery(r) for r in rs]),
        "publishes_per_s": median([(r.get("publish") or {}).get("rate_actual") for r in rs]),
        "lost": sum(r.get("lost", 0) for r in rs),
        "duplicates": sum(r.get("duplicates", 0) for r in rs),
    }


table = {label: figures(rs) for label, rs in sorted(runs.items())}
for label, f in table.items():
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in f.items() if v is not None}
    print(label, json.dumps(shown))
for label, f in table.items():
    if not label.startswith("gw-"):
        continue
    floor = table.get("ref-" + label[3:])
    if not floor:
        continue
    ratios = {}
    for k in ("kib_per_conn", "deliveries_per_s", "p99_ms", "cpu_us_per_delivery"):
        if f.get(k) and floor.get(k):
            ratios[k] = round(f[k] / floor[k], 3)
    print(label, "/ floor:", json.dumps(ratios))
