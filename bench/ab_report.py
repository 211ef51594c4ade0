#!/usr/bin/env python3
"""Medians and ratios of bench/ab.sh runs: OUT_DIR BASE_REV HEAD_REV N."""
import glob
import json
import os
import statistics
import sys

out_dir, base_rev, head_rev, n = sys.argv[1:5]
FIGURES = [
    # (name, scenario, key, format)
    ("fan-out p99, median of rounds (ms)", "fanout", "median_p99_ms", "{:.0f}"),
    ("server RSS per agent, settled (KB)", "connect", "rss_per_agent_kb", "{:.1f}"),
    ("server RSS per agent, last agent online (KB)", "connect", "rss_online_per_agent_kb", "{:.1f}"),
    ("time until all online (s)", "connect", "seconds", "{:.2f}"),
    ("reconnect storm: all back (s)", "reconnect-storm", "seconds", "{:.2f}"),
    ("reconnect storm: musterd CPU (s)", "reconnect-storm", "server_cpu_s", "{:.1f}"),
    ("reconnect storm: load tool CPU (s)", "reconnect-storm", "tool_cpu_s", "{:.1f}"),
]

runs = {"base": [], "head": []}
for path in sorted(glob.glob(os.path.join(out_dir, "*.jsonl"))):
    variant = os.path.basename(path).split("-")[0]
    scenarios = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            d = json.loads(line)
            scenarios[d["scenario"]] = d
    runs[variant].append(scenarios)

print(f"A/B at N={int(n):,}: base {base_rev} vs head {head_rev}, "
      f"{len(runs['base'])} + {len(runs['head'])} runs, alternating order\n")
print("| figure | base (each run) | head (each run) | base median | head median | head/base |")
print("|---|---|---|---|---|---|")
for name, scenario, key, fmt in FIGURES:
    vals = {v: [r[scenario][key] for r in runs[v] if key in r.get(scenario, {})] for v in runs}
    if not vals["base"] or not vals["head"]:
        print(f"| {name} | n/a | n/a | | | |")
        continue
    med = {v: statistics.median(vals[v]) for v in vals}
    each = {v: ", ".join(fmt.format(x) for x in vals[v]) for v in vals}
    ratio = med["head"] / med["base"] if med["base"] else float("nan")
    print(f"| {name} | {each['base']} | {each['head']} | {fmt.format(med['base'])} | "
          f"{fmt.format(med['head'])} | {ratio:.3f} |")
