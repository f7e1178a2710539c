"""Startup and throughput benchmarks of bus-containers against baselines (issue 4).

    .venv/bin/python benchmarks/run.py [--pairs 9] [--only 1,3]     (or: make bench)

Every benchmark runs its command (A) and its baseline (B) ALTERNATELY, A B A B ..., in
this one process tree, after untimed warm-up runs (which also write the .pyc files), and
compares the medians, so machine noise hits both sides alike. Each command is started by
a bare launcher interpreter (_launch.py) that times it (`time.perf_counter` from spawn to
reap) and takes ITS `ru_maxrss` and CPU time from `os.wait4` on its pid: one child's own
figures, never the max over all children, and not inflated by this runner's memory.

Children get a clean environment: no PYTHON* variables (PYTHONDONTWRITEBYTECODE would
make our modules compile on every run while click's come from its .pyc; see
docs/performance.md), no BUS_* variables, a temporary XDG_CONFIG_HOME (so the config dir
is found the way a user's is), NO_PROXY for loopback. Emulators are started on
127.0.0.1 port 0 with temporary state dirs and are stopped (and checked to leave no
process behind) before this exits.

Exit status: 0 when every limit holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import live
from harness import (
    MB,
    BenchError,
    Context,
    Report,
    alternate,
    clean_env,
    descendants_of,
    emulator,
    machine,
    measure,
    median,
    mib,
    ms,
    time_row,
    tool,
)

# 20 MB of deterministic text: the same bytes locally and inside the emulator's run.
BIG_OUTPUT = "seq 1 4000000 | head -c 20000000"
BIG_OUTPUT_BYTES = 20_000_000
# The same output, but only after the create call's 1 s `Prefer: wait` has passed, so the
# CLI streams it from the logs endpoint instead of reading it from the POST answer.
BIG_OUTPUT_STREAMED = f"sleep 1.5; {BIG_OUTPUT}"


# -- the benchmarks ----------------------------------------------------------------------
def bench_help(ctx) -> None:
    """1. `bus-containers --help` vs `python -c "import click"`."""
    a, b = alternate([tool("bus-containers"), "--help"],
                     [sys.executable, "-c", "import click"], ctx.env, ctx.env,
                     ctx.fast_pairs)
    time_row(ctx.report, "1", "`bus-containers --help` vs `python -c 'import click'`",
             a, b, 1.3)


def bench_host_help(ctx) -> None:
    """2. `bus --help` with the plugin vs the same host with ours disabled."""
    bus = tool("bus")
    def has_containers(sample):
        if b"containers" not in sample.stdout_head:
            raise BenchError("`bus --help` does not list the containers group")

    def lacks_containers(sample):
        if b"containers" in sample.stdout_head:
            raise BenchError("BUS_DISABLE_PLUGINS=containers still lists containers")
    a, b = alternate([bus, "--help"], [bus, "--help"], ctx.env,
                     {**ctx.env, "BUS_DISABLE_PLUGINS": "containers"}, ctx.fast_pairs,
                     verify_a=has_containers, verify_b=lacks_containers)
    time_row(ctx.report, "2", "`bus --help` vs `BUS_DISABLE_PLUGINS=containers bus --help`",
             a, b, 1.10)


BARE_STATUS = """\
import os, requests
url = os.environ["BUS_AI_API_URL"] + "/api/v1/containers/status"
with open(%r) as f:
    token = f.read().strip()
headers = {"Authorization": "Bearer " + token,
           "Accept": "application/json", "User-Agent": "bus-containers/%s"}
r = requests.get(url, headers=headers, timeout=(10, 30), allow_redirects=False)
print(r.json()["status"])
"""


def bench_status(ctx) -> None:
    """3. `bus-containers status` vs a bare requests GET with the same headers. The token
    is where `bus auth token` saves it (<config dir>/auth/api-token): both read that file."""
    from bus_containers import __version__

    with emulator(ctx.tmp, "status") as emu:
        token_file = ctx.config_dir / "bus" / "auth" / "api-token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.touch(mode=0o600)
        token_file.write_text(emu.token("bench-status") + "\n")
        env = clean_env(ctx.config_dir, BUS_AI_API_URL=emu.url)

        def says_ready(sample):
            if sample.stdout_head.split(b"\n", 1)[0] != b"ready":
                raise BenchError(f"status printed {sample.stdout_head[:200]!r}")
        a, b = alternate([tool("bus-containers"), "status"],
                         [sys.executable, "-c", BARE_STATUS % (str(token_file), __version__)],
                         env, env, ctx.fast_pairs, verify_a=says_ready, verify_b=says_ready)
    time_row(ctx.report, "3", "`bus-containers status` vs bare `requests.get` (python -c)",
             a, b, 1.35)


def bench_list(ctx) -> None:
    """4. `runs --json` over 10,000 runs vs over 1,000 (separate seeded accounts)."""
    with emulator(ctx.tmp, "list") as emu:
        emu.seed("bench-10k", 10_000)
        emu.seed("bench-1k", 1_000)
        cli = tool("bus-containers")

        def env_for(sub):
            return clean_env(ctx.config_dir, BUS_AI_API_URL=emu.url,
                             BUS_AI_TOKEN=emu.token(sub))

        def verify(count):
            def verify(sample):
                runs = json.loads(sample.stdout_head)
                if len(runs) != count or len({r["id"] for r in runs}) != count:
                    raise BenchError(f"runs --json gave {len(runs)} runs, not {count}")
            return verify
        a, b = alternate([cli, "runs", "--json", "--limit", "10000"],
                         [cli, "runs", "--json", "--limit", "1000"],
                         env_for("bench-10k"), env_for("bench-1k"), ctx.pairs,
                         verify_a=verify(10_000), verify_b=verify(1_000))
    ta, tb = time_row(ctx.report, "4", "`runs --json`: 10,000 runs vs 1,000: time", a, b, 12)
    ma, mb = median(s.maxrss_kib for s in a), median(s.maxrss_kib for s in b)
    ctx.report.add("4", "`runs --json`: 10,000 runs vs 1,000: peak RSS", mib(ma), mib(mb),
                   f"{ma / mb:.3f}", "<= 8", ma / mb <= 8)
    ctx.report.add("4", "ms per 1,000 runs (10,000-run list)", f"{ta * 100:.1f} ms",
                   f"{tb * 1000:.1f} ms", "-", "-", None)
    ctx.report.notes.append(
        f"4: the 10,000-run list costs {(ta - tb) / 9 * 1000:.1f} ms per extra 1,000 runs "
        f"(marginal), {ta * 100:.1f} ms per 1,000 runs on average (startup included).")


def bench_big_output(ctx) -> None:
    """5. `run -- <20 MB printer>`: stdout identical, peak RSS <= idle peak + 80 MB."""
    local = measure(["sh", "-c", BIG_OUTPUT], ctx.env)
    if local.stdout_len != BIG_OUTPUT_BYTES:
        raise BenchError(f"the generator printed {local.stdout_len} bytes locally")
    with emulator(ctx.tmp, "output") as emu:
        env = clean_env(ctx.config_dir, BUS_AI_API_URL=emu.url,
                        BUS_AI_TOKEN=emu.token("bench-output"))
        cli = tool("bus-containers")

        def identical(sample):
            if sample.stdout_sha256 != local.stdout_sha256:
                raise BenchError(f"run stdout differs from the local output: "
                                 f"{sample.stdout_len} bytes, sha256 {sample.stdout_sha256}"
                                 f"; stderr: {sample.stderr[-500:]}")
        for key, script, label in (("5", BIG_OUTPUT, "in the POST answer"),
                                   ("5b", BIG_OUTPUT_STREAMED, "streamed via logs")):
            a, b = alternate([cli, "run", "--", "sh", "-c", script], [cli, "--version"],
                             env, env, ctx.pairs, warmup=1)
            for sample in a:
                identical(sample)
            ma, mb = median(s.maxrss_kib for s in a), median(s.maxrss_kib for s in b)
            extra = (ma - mb) * 1024
            ctx.report.add(key, f"`run` printing 20 MB ({label}): peak RSS vs `--version`",
                           mib(ma), mib(mb), f"+{extra / MB:.1f} MB", "<= +80 MB",
                           extra <= 80 * MB)
            ctx.report.add(key, "stdout byte-identical to the local output (sha256)",
                           f"{len(a)}/{len(a)} identical", "-", "-", "all", True)
            ctx.report.notes.append(
                f"{key}: `run` {label}: median {ms(median(s.seconds for s in a))} for 20 MB.")


def bench_throughput(ctx, total: int = 200, clients: int = 8) -> None:
    """6. The emulator: `total` runs of `true` from `clients` concurrent clients."""
    import requests

    with emulator(ctx.tmp, "throughput") as emu:
        tokens = [emu.token(f"bench-client-{i}") for i in range(clients)]
        jobs: queue.Queue = queue.Queue()
        for n in range(total):
            jobs.put(n)
        latencies, errors, lock = [], [], threading.Lock()
        start = threading.Barrier(clients + 1)

        def create(session, token):
            headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                       "Idempotency-Key": str(uuid.uuid4()), "Prefer": "wait=30"}
            t0 = time.perf_counter()
            r = session.post(emu.api("/runs"), json={"profile": "codex", "command": ["true"]},
                             headers=headers, timeout=60)
            elapsed = time.perf_counter() - t0
            ok = r.status_code == 201 and r.json().get("status") == "succeeded"
            return elapsed, ok, f"HTTP {r.status_code} {r.text[:200]}"

        def client(i):
            with requests.Session() as session:
                try:
                    create(session, tokens[i])  # warm-up: connection, first-call costs
                except requests.RequestException as exc:
                    with lock:
                        errors.append(f"warm-up: {exc}")
                start.wait()
                while True:
                    try:
                        jobs.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        elapsed, ok, detail = create(session, tokens[i])
                    except requests.RequestException as exc:
                        elapsed, ok, detail = 0.0, False, str(exc)
                    with lock:
                        if ok:
                            latencies.append(elapsed)
                        else:
                            errors.append(detail)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        stats = emu.stats()
        leftovers = descendants_of(emu.proc.pid)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies \
        else float("nan")
    r = ctx.report
    r.add("6", f"emulator: {total} runs of `true`, {clients} clients: runs/s",
          f"{len(latencies) / wall:.1f} runs/s", "-", "-", "-", None)
    r.add("6", "POST /runs (Prefer: wait) latency p50 / p99", f"{ms(p50)} / {ms(p99)}",
          "-", "-", "-", None)
    r.add("6", "errors", str(len(errors)), "-", "-", "0", not errors)
    running = stats.get("processes_running")
    r.add("6", "leftover processes (stats processes_running; emulator's children)",
          f"{running}; {len(leftovers)}", "-", "-", "0; 0", running == 0 and not leftovers)
    if errors:
        r.notes.append(f"6: first errors: {errors[:3]}")


BENCHMARKS = {1: bench_help, 2: bench_host_help, 3: bench_status, 4: bench_list,
              5: bench_big_output, 6: bench_throughput, 7: live.bench_first_byte,
              8: live.bench_quick_run, 9: live.bench_wait, 10: live.bench_list_output,
              11: live.bench_filtered_list, 12: live.bench_peers}



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=9,
                        help="timed A/B pairs per benchmark (at least 7; default 9); the "
                             "startup benchmarks 1-3 and 7-8 run three times as many")
    parser.add_argument("--only", default="", help="comma-separated benchmark numbers")
    args = parser.parse_args(argv)
    if args.pairs < 7:
        parser.error("--pairs must be at least 7")
    chosen = [int(n) for n in args.only.split(",") if n.strip()] or sorted(BENCHMARKS)
    print(f"machine: {machine()}")
    print(f"pairs: {args.pairs} ({3 * args.pairs} for benchmarks 1-3 and 7-8), alternating A B "
          "after untimed warm-up runs; medians compared\n",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bus-bench-") as tmp:
        config_dir = Path(tmp) / "config"
        config_dir.mkdir()
        ctx = Context(args.pairs, 3 * args.pairs, Path(tmp), config_dir,
                      clean_env(config_dir), Report())
        failed = []
        for number in chosen:
            started = time.perf_counter()
            try:
                BENCHMARKS[number](ctx)
            except BenchError as exc:
                failed.append(number)
                ctx.report.add(str(number), f"could not run: {exc}", "-", "-", "-", "-", False)
            print(f"benchmark {number} done in {time.perf_counter() - started:.1f} s",
                  file=sys.stderr, flush=True)
    print()
    ctx.report.print()
    ok = all(row.ok is not False for row in ctx.report.rows)
    print(f"\n{'all limits hold' if ok else 'SOME LIMITS DO NOT HOLD'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
