"""The benchmarks of issue 13 (live means live), run by run.py as numbers 7-12:

7  first output byte of `run -- sh -c 'echo a; sleep 3'` vs the whole of `status`
8  `run -- true` vs `status` (a quick command stays one round trip)
9  `wait` (after `run --detach`): how long after the run's end it returns, and requests
10 `runs --limit 50` over runs of 1 MiB output vs runs of none: client and emulator
11 `runs --status failed` vs `runs` over 200,000 stored runs
12 peers' `--help` beside ours (modal, llm, gh), each when installed

All with real emulator processes and real CLI processes, as a user runs them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from datetime import datetime

from harness import (
    BenchError,
    alternate,
    check,
    clean_env,
    emulator,
    measure,
    median,
    mib,
    ms,
    time_row,
    tool,
)

FIRST_BYTE_SCRIPT = "echo a; sleep 3"
# Seconds: "at any run length". Two lanes of detach + wait, so few CLIs start at once on
# the 2 shared cores: each `wait` is in flight well before its run ends (else the lag
# would be that CLI's startup, not how soon it hears of the end).
WAIT_LENGTHS = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
WAIT_LANES = 2
LIST_RUNS = 50
BIG_RUN = "yes 0123456789abcdef | head -c 1048576"  # 1 MiB of text
STORED_RUNS = 200_000
FAILED_RUNS = 100  # the oldest: a filter that scans finds them last
PEERS = ("modal", "llm", "gh")


def _token_file_env(ctx, emu, sub: str) -> dict[str, str]:
    """The CLI's env, its token where `bus auth token` saves it (as benchmark 3)."""
    token_file = ctx.config_dir / "bus" / "auth" / "api-token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.touch(mode=0o600)
    token_file.write_text(emu.token(sub) + "\n")
    return clean_env(ctx.config_dir, BUS_AI_API_URL=emu.url)


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _time_to_first_byte(argv: list[str], env: dict[str, str], expect: bytes) -> float:
    """Spawn to the first byte on stdout; then Ctrl-C (the run keeps going: detached)."""
    started = time.perf_counter()
    proc = _spawn(argv, env)
    try:
        first = os.read(proc.stdout.fileno(), 256)
        elapsed = time.perf_counter() - started
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    if not first.startswith(expect):
        raise BenchError(f"{argv} printed {first!r} first, not {expect!r}")
    return elapsed


def _time_to_exit(argv: list[str], env: dict[str, str], expect: bytes) -> float:
    started = time.perf_counter()
    proc = _spawn(argv, env)
    out = proc.stdout.read()
    proc.wait()
    elapsed = time.perf_counter() - started
    proc.stdout.close()
    if proc.returncode != 0 or not out.startswith(expect):
        raise BenchError(f"{argv} exited {proc.returncode} printing {out[:200]!r}")
    return elapsed


def bench_first_byte(ctx) -> None:
    """7. Spawn to the first output byte of a run that prints at once and lives 3 s, vs the
    whole of `status` (spawn to exit), alternating."""
    cli = tool("bus-containers")
    with emulator(ctx.tmp, "first-byte") as emu:
        env = _token_file_env(ctx, emu, "bench-first-byte")
        run_a = [cli, "run", "--", "sh", "-c", FIRST_BYTE_SCRIPT]
        firsts, statuses = [], []
        for i in range(2 + ctx.fast_pairs):  # 2 untimed warm-up pairs
            first = _time_to_first_byte(run_a, env, b"a\n")
            whole = _time_to_exit([cli, "status"], env, b"ready")
            if i >= 2:
                firsts.append(first)
                statuses.append(whole)
    fa, fs = median(firsts), median(statuses)
    ctx.report.add("7", "first output byte of `run -- sh -c 'echo a; sleep 3'` vs `status`",
                   ms(fa), ms(fs), f"{fa / fs:.3f}", "<= 1.3", fa / fs <= 1.3)
    ctx.report.notes.append(
        f"7: fastest runs: first byte {ms(min(firsts))} vs status {ms(min(statuses))}, "
        f"ratio {min(firsts) / min(statuses):.3f}")


def bench_quick_run(ctx) -> None:
    """8. `run -- true` vs `status`: a quick command stays one round trip."""
    cli = tool("bus-containers")
    with emulator(ctx.tmp, "quick-run") as emu:
        env = _token_file_env(ctx, emu, "bench-quick-run")
        a, b = alternate([cli, "run", "--", "true"], [cli, "status"], env, env,
                         ctx.fast_pairs)
    time_row(ctx.report, "8", "`run -- true` vs `status`", a, b, 1.15)


def _rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def bench_wait(ctx) -> None:
    """9. `run --detach -- sleep L` then `wait --json ID` (CLI processes, two at a time, for
    several L): the time from the run's `finished_at` to `wait`'s exit, and its requests."""
    cli = tool("bus-containers")
    with emulator(ctx.tmp, "wait") as emu:
        env = clean_env(ctx.config_dir, BUS_AI_API_URL=emu.url,
                        BUS_AI_TOKEN=emu.token("bench-wait"))
        # One warm-up (.pyc, first connection), untimed.
        _wait_once(cli, env, 0.2)
        emu.reset_counters()
        with concurrent.futures.ThreadPoolExecutor(WAIT_LANES) as pool:
            results = list(pool.map(lambda length: _wait_once(cli, env, length),
                                    WAIT_LENGTHS))
        attempts = emu.stats()["attempts"]
    lags = [lag for lag, _ in results]
    gets = [attempts.get(f"GET /api/v1/containers/runs/{run_id}", 0) for _, run_id in results]
    worst = max(lags)
    ctx.report.add("9", f"`wait` after `run --detach`: exit after the run's end (runs of "
                   f"{WAIT_LENGTHS[0]:g}-{WAIT_LENGTHS[-1]:g} s), median / worst",
                   f"{ms(median(lags))} / {ms(worst)}", "-", "-", "worst <= 300 ms",
                   worst <= 0.3)
    ctx.report.add("9", "`wait`: GET /runs/{id} requests per run, median / most",
                   f"{median(gets):g} / {max(gets)}", "-", "-", "most <= 5", max(gets) <= 5)
    ctx.report.notes.append("9: per run length (s: lag ms): " + ", ".join(
        f"{length:g}: {lag * 1000:.0f}" for length, lag in zip(WAIT_LENGTHS, lags,
                                                               strict=True)))


def _wait_once(cli: str, env: dict[str, str], length: float) -> tuple[float, str]:
    """`run --detach -- sleep LENGTH`, then `wait --json ID`: (seconds from the run's
    `finished_at` to wait's exit, run id)."""
    detach = subprocess.run([cli, "run", "--detach", "--", "sleep", f"{length:g}"], env=env,
                            capture_output=True, timeout=60)
    if detach.returncode != 0:
        raise BenchError(f"run --detach exited {detach.returncode}: {detach.stderr[-500:]!r}")
    run_id = detach.stdout.decode().strip()
    proc = subprocess.run([cli, "wait", "--json", run_id], env=env, capture_output=True,
                          timeout=120)
    exited = time.time()
    if proc.returncode != 0:
        raise BenchError(f"wait exited {proc.returncode}: {proc.stderr[-500:]!r}")
    run = json.loads(proc.stdout)
    return exited - _rfc3339(run["finished_at"]), run_id


def _emulator_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError("no VmHWM in /proc (Linux only)")


def _reset_hwm(pid: int) -> None:
    # "5" resets the peak RSS to the current RSS (proc(5)): the next figure is this list's.
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def _create_runs(emu, token: str, script: str, count: int) -> None:
    headers = {**emu.auth(token), "Prefer": "wait=60"}

    def create(_):
        r = emu.session.post(emu.api("/runs"), json={"profile": "codex",
                                                     "command": ["sh", "-c", script]},
                             headers={**headers, "Idempotency-Key": str(uuid.uuid4())},
                             timeout=90)
        if r.status_code != 201 or r.json().get("status") != "succeeded":
            raise BenchError(f"creating a run: HTTP {r.status_code} {r.text[:200]}")
    # Serially: one requests.Session is not shared across threads.
    for n in range(count):
        create(n)


def bench_list_output(ctx) -> None:
    """10. `runs --limit 50` over 50 runs of 1 MiB output vs 50 runs with none (two accounts
    of one emulator): the CLI's time and peak RSS, the emulator's peak RSS while it answers
    and its time for the raw `GET /runs?limit=50`."""
    import requests

    cli = tool("bus-containers")
    with emulator(ctx.tmp, "list-output") as emu:
        tokens = {"big": emu.token("bench-big"), "empty": emu.token("bench-empty")}
        _create_runs(emu, tokens["big"], BIG_RUN, LIST_RUNS)
        _create_runs(emu, tokens["empty"], "true", LIST_RUNS)
        envs = {k: clean_env(ctx.config_dir, BUS_AI_API_URL=emu.url, BUS_AI_TOKEN=t)
                for k, t in tokens.items()}
        argv = [cli, "runs", "--limit", str(LIST_RUNS)]
        pid = emu.proc.pid
        samples: dict[str, list] = {"big": [], "empty": []}
        emu_hwm: dict[str, list[int]] = {"big": [], "empty": []}
        for i in range(2 + ctx.pairs):
            for kind in ("big", "empty"):
                _reset_hwm(pid)
                sample = check(measure(argv, envs[kind]), f"runs ({kind})")
                if i >= 2:
                    samples[kind].append(sample)
                    emu_hwm[kind].append(_emulator_hwm_kib(pid))
        # The emulator alone: 5 raw page requests per sample, alternating.
        raw: dict[str, list[float]] = {"big": [], "empty": []}
        page = None
        with requests.Session() as session:
            for i in range(2 + ctx.pairs):
                for kind in ("big", "empty"):
                    started = time.perf_counter()
                    for _ in range(5):
                        r = session.get(emu.api("/runs"), params={"limit": LIST_RUNS},
                                        headers=emu.auth(tokens[kind]), timeout=60)
                        if r.status_code != 200:
                            raise BenchError(f"GET /runs: HTTP {r.status_code}")
                    if i >= 2:
                        raw[kind].append((time.perf_counter() - started) / 5)
                    if kind == "big":
                        page = r.json()
    report = ctx.report
    time_row(report, "10", "`runs --limit 50`: 1 MiB-output runs vs empty: CLI time",
             samples["big"], samples["empty"], 1.2)
    ma = median(s.maxrss_kib for s in samples["big"])
    mb = median(s.maxrss_kib for s in samples["empty"])
    report.add("10", "`runs --limit 50`: CLI peak RSS", mib(ma), mib(mb), f"{ma / mb:.3f}",
               "<= 1.2", ma / mb <= 1.2)
    ta, tb = median(raw["big"]), median(raw["empty"])
    report.add("10", "emulator: `GET /runs?limit=50` time", ms(ta), ms(tb), f"{ta / tb:.3f}",
               "<= 1.2", ta / tb <= 1.2)
    ha, hb = median(emu_hwm["big"]), median(emu_hwm["empty"])
    report.add("10", "emulator: peak RSS while answering `runs --limit 50`", mib(ha), mib(hb),
               f"{ha / hb:.3f}", "<= 1.2", ha / hb <= 1.2)
    leaked = sorted({k for run in (page or {}).get("runs", []) for k in ("stdout", "stderr")
                     if k in run})
    report.add("10", "list items carry no output (summaries with `output_bytes`)",
               "no stdout/stderr" if not leaked else f"has {', '.join(leaked)}", "-", "-",
               "none", not leaked and all("output_bytes" in run
                                          for run in (page or {}).get("runs", [])))


def bench_filtered_list(ctx) -> None:
    """11. `runs --status failed` vs `runs` over 200,000 stored runs (seeded through the
    admin endpoint; the failed ones are the oldest, so a scan would find them last)."""
    cli = tool("bus-containers")
    with emulator(ctx.tmp, "filtered") as emu:
        sub = "bench-200k"
        started = time.perf_counter()
        emu.seed(sub, FAILED_RUNS, status="failed", age_seconds=3600)
        emu.seed(sub, STORED_RUNS - FAILED_RUNS)
        seeded = time.perf_counter() - started
        env = clean_env(ctx.config_dir, BUS_AI_API_URL=emu.url, BUS_AI_TOKEN=emu.token(sub))

        def lists_failed(sample):
            rows = sample.stdout_head.decode(errors="replace").splitlines()[1:]
            if len(rows) != 20 or any("failed" not in row.split() for row in rows):
                raise BenchError(f"runs --status failed printed {sample.stdout_head[:300]!r}")
        a, b = alternate([cli, "runs", "--status", "failed"], [cli, "runs"], env, env,
                         ctx.pairs, verify_a=lists_failed)
    time_row(ctx.report, "11", f"`runs --status failed` vs `runs`, {STORED_RUNS:,} runs stored",
             a, b, 2)
    ctx.report.notes.append(f"11: seeding {STORED_RUNS:,} runs took {seeded:.1f} s")


def bench_peers(ctx) -> None:
    """12. `--help` of peer CLIs beside ours, when installed (informational)."""
    ours = [tool("bus-containers"), "--help"]
    for name in PEERS:
        path = shutil.which(name)
        if path is None:
            ctx.report.add("12", f"`{name} --help`: not installed, skipped", "-", "-", "-", "-",
                           None)
            continue
        a, b = alternate(ours, [path, "--help"], ctx.env, ctx.env, ctx.pairs)
        ta, tb = median(s.seconds for s in a), median(s.seconds for s in b)
        ma, mb = median(s.maxrss_kib for s in a), median(s.maxrss_kib for s in b)
        ctx.report.add("12", f"`bus-containers --help` vs `{name} --help` (peak RSS "
                       f"{mib(ma)} vs {mib(mb)})", ms(ta), ms(tb), f"{ta / tb:.3f}", "-", None)
