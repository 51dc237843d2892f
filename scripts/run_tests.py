#!/usr/bin/env python3
"""Runs the workspace's test binaries (built by `cargo test --no-run`) a few
at a time instead of one after another.

Most of the integration tests' time is waiting on purpose (a replica frozen
for 10 s, a graceful restart, a shard down for 20 s), not CPU, so running
binaries side by side cuts the wall time of the test command without
changing any test. Each binary runs from its package's directory, as
`cargo test` runs it, with its output kept and printed whole when it ends;
the slowest binaries start first. Exits non-zero if any binary failed.

    scripts/run_tests.py [JOBS] [-- ARGS for every test binary]

Not in the test command yet: side by side, `memory_bound` cannot fill its
engine (it needs the CPU to itself) and the cluster scenarios see slower
replication; the test command runs `cargo test` one binary at a time.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

# Start these first: they are the long ones (seconds in CI, roughly).
SLOW_FIRST = ["cluster", "production_faults", "serve", "ledger_memory", "server_down", "conformance"]


def executables():
    out = subprocess.run(
        ["cargo", "test", "--workspace", "--all-targets", "--no-run", "--message-format=json"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    found = []
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test") and msg["target"]["kind"] != ["bench"]:
            continue
        pkg_dir = os.path.dirname(msg["manifest_path"])
        found.append((msg["target"]["name"], msg["target"]["kind"][0], msg["executable"], pkg_dir))
    # The same binary can be listed twice (fresh and cached): keep one.
    seen, unique = set(), []
    for f in found:
        if f[2] not in seen:
            seen.add(f[2])
            unique.append(f)
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    unique.sort(key=lambda f: rank.get(f[0], len(SLOW_FIRST)))
    return unique


def run(entry, args):
    name, kind, exe, cwd = entry
    started = time.time()
    with tempfile.TemporaryFile(mode="w+") as log:
        # Benches (harness = false, criterion) get `--test`, as `cargo test`
        # runs them: each benchmark once, small.
        extra = ["--test"] if kind == "bench" else args
        status = subprocess.call([exe] + extra, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        log.seek(0)
        return name, kind, status, time.time() - started, log.read()


def main():
    argv = sys.argv[1:]
    jobs = int(argv.pop(0)) if argv and argv[0].isdigit() else 3
    args = argv[argv.index("--") + 1 :] if "--" in argv else []
    entries = executables()
    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for name, kind, status, secs, output in pool.map(lambda e: run(e, args), entries):
            print(f"---- {kind} {name}: exit {status} in {secs:.1f}s", flush=True)
            print(output, flush=True)
            if status != 0:
                failed.append(f"{kind} {name}")
    if failed:
        print("FAILED test binaries: " + ", ".join(failed))
        sys.exit(1)
    print(f"all {len(entries)} test binaries passed")


if __name__ == "__main__":
    main()
