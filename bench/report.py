#!/usr/bin/env python3
"""Turns muster-loadgen JSON lines into the table of docs/benchmarks.md."""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

out_dir, sizes = sys.argv[1], sys.argv[2:]
rows = {}
for n in sizes:
    path = os.path.join(out_dir, f"{n}.jsonl")
    rows[n] = {}
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                d = json.loads(line)
                rows[n][d["scenario"]] = d

def get(n, scenario, key, fmt="{:.2f}"):
    v = rows[n].get(scenario, {}).get(key)
    return "n/a" if v is None else fmt.format(v)

commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("# Benchmarks\n")
print(f"Measured by `bench/run.sh` on {datetime.date.today()} at commit `{commit}`: "
      f"{os.cpu_count()} vCPU ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
      f"{platform.platform()}. musterd (RelWithDebInfo -O2, gRPC 1.51.1 Release, SQLite WAL) and the load generator share the "
      "two cores, so every figure is pessimistic. One TCP connection per simulated agent; "
      "agents use the real link client of `src/agent`.\n")
print("| figure | target | " + " | ".join(f"N={int(n):,}" for n in sizes) + " |")
print("|---|---|" + "---|" * len(sizes))
def row(name, target, scenario, key, fmt="{:.2f}"):
    print(f"| {name} | {target} | " + " | ".join(get(n, scenario, key, fmt) for n in sizes) + " |")
row("time until all online (s)", "", "connect", "seconds")
row("server RSS per agent (KB)", "< 40 (aim 20)", "connect", "rss_per_agent_kb", "{:.1f}")
row("server RSS after connect (MB)", "", "connect", "rss_after_mb", "{:.0f}")
row("server threads before / after", "", "connect", "threads_after", "{:.0f}")
row("idle CPU, 30 s heartbeats (% of a core)", "< 5 at 10k", "idle", "cpu_pct")
row("fan-out p99, median of 5 rounds (ms)", "< 750 at 10k", "fanout", "median_p99_ms", "{:.0f}")
row("throughput (commands/s)", "", "throughput", "commands_per_s", "{:.0f}")
row("store batch / commit (last)", "", "throughput", "store_batch_size", "{:.0f}")
row("reconnect storm: all back (s)", "< 15 at 10k", "reconnect-storm", "seconds")
row("reconnect storm: peak server CPU (%)", "", "reconnect-storm", "peak_cpu_pct", "{:.0f}")
row("reconnect storm: musterd restart, exec to /healthz (s)", "", "reconnect-storm", "restart_s")
row("reconnect storm: musterd CPU to take the fleet back (s)", "", "reconnect-storm", "server_cpu_s", "{:.1f}")
row("reconnect storm: max attempts per agent", "", "reconnect-storm", "max_attempts_per_agent", "{:.0f}")
row("reconnect storm: shortest retry gap of one agent (ms)", "", "reconnect-storm", "min_retry_gap_ms", "{:.0f}")
row("reconnect storm: retries sooner than the backoff allows", "0", "reconnect-storm", "early_retries", "{:.0f}")
print()
for n in sizes:
    f = rows[n].get("fanout")
    if f:
        rounds = ", ".join(f"{r.get('create_ms', 0):.0f}/{r['p50_ms']:.0f}/{r['p99_ms']:.0f}/{r['max_ms']:.0f}" for r in f["rounds"])
        print(f"- N={int(n):,} fan-out rounds (POST answered / p50 / p99 / max ms): {rounds}")
        cpu = [(r.get("server_cpu_ms"), r.get("loadgen_cpu_ms")) for r in f["rounds"]]
        if all(a is not None and b is not None for a, b in cpu):
            srv = sorted(a for a, _ in cpu)[len(cpu) // 2]
            lg = sorted(b for _, b in cpu)[len(cpu) // 2]
            print(f"  CPU per round, median: musterd {srv:.0f} ms, load tool {lg:.0f} ms "
                  f"({1000 * srv / int(n):.0f} + {1000 * lg / int(n):.0f} µs per agent)")

# The analysis is written by hand and kept next to this script, so a re-run keeps it.
notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "analysis.md")
if os.path.exists(notes):
    print()
    print(open(notes).read().rstrip())
