"""What every benchmark shares: measuring one child, alternating pairs, the table, a clean
environment, the emulators. See run.py for how they are used and docs/performance.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bus_containers.emulator.launch import alive, descendants_of, launch  # noqa: F401

MB = 1_000_000
EMULATOR_CONFIG = """
[emulator]
output_cap_bytes = 67108864   # 64 MiB: benchmark 5 prints 20 MB
max_wait_seconds = 60
"""

# -- one child, measured -----------------------------------------------------------------
@dataclass
class Sample:
    seconds: float
    maxrss_kib: int
    returncode: int
    stdout_sha256: str
    stdout_len: int
    stdout_head: bytes  # the first KEEP bytes (or all, when keep_all)
    stderr: str
    cpu_seconds: float


LAUNCHER = Path(__file__).resolve().parent / "_launch.py"
KEEP = 64 * 1024


def measure(argv: list[str], env: dict[str, str], *, keep_all: bool = False) -> Sample:
    """Run argv to completion through the lean launcher (see _launch.py): wall time, the
    command's own peak RSS and CPU time, and a hash of its stdout."""
    digest, head, size = hashlib.sha256(), bytearray(), 0
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as result:
        proc = subprocess.Popen([sys.executable, "-I", "-S", str(LAUNCHER), result.name,
                                 "--", *argv], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        try:
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
                size += len(chunk)
                if keep_all or len(head) < KEEP:
                    head += chunk
            proc.stdout.close()
            launcher_rc = proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)  # the launcher and the command it started
            proc.wait()
            raise
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
        fields = result.read().split()
    if launcher_rc != 0 or len(fields) != 5:
        raise BenchError(f"could not run {argv}: {stderr.strip()[-2000:]}")
    return Sample(float(fields[1]), int(fields[2]), int(fields[0]), digest.hexdigest(), size,
                  bytes(head if keep_all else head[:KEEP]), stderr,
                  float(fields[3]) + float(fields[4]))


def check(sample: Sample, what: str, expect_rc: int = 0) -> Sample:
    if sample.returncode != expect_rc:
        raise BenchError(f"{what} exited {sample.returncode} (expected {expect_rc}): "
                         f"{sample.stderr.strip()[-2000:]}")
    return sample


class BenchError(RuntimeError):
    pass


def alternate(a: list[str], b: list[str], env_a: dict, env_b: dict, pairs: int,
              warmup: int = 2, verify_a=None, verify_b=None) -> tuple[list, list]:
    """A B A B ... `pairs` times after `warmup` untimed pairs; every sample is checked."""
    samples_a, samples_b = [], []
    for i in range(warmup + pairs):
        sa = check(measure(a, env_a, keep_all=verify_a is not None), "A: " + " ".join(a))
        if verify_a:
            verify_a(sa)
        sb = check(measure(b, env_b, keep_all=verify_b is not None), "B: " + " ".join(b))
        if verify_b:
            verify_b(sb)
        if i >= warmup:
            samples_a.append(sa)
            samples_b.append(sb)
    return samples_a, samples_b


def median(values) -> float:
    return statistics.median(values)


# -- the table ---------------------------------------------------------------------------
@dataclass
class Row:
    bench: str
    metric: str
    ours: str
    baseline: str
    ratio: str
    limit: str
    ok: bool | None  # None: informational

    def cells(self) -> list[str]:
        verdict = "-" if self.ok is None else ("pass" if self.ok else "FAIL")
        return [self.bench, self.metric, self.ours, self.baseline, self.ratio, self.limit,
                verdict]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args, **kw) -> None:
        self.rows.append(Row(*args, **kw))

    def print(self) -> None:
        header = ["#", "metric", "ours (median)", "baseline (median)", "ratio", "limit",
                  "result"]
        table = [header] + [r.cells() for r in self.rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        for n, cells in enumerate(table):
            print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
                  + " |")
            if n == 0:
                print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for note in self.notes:
            print(f"- {note}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def time_row(report, bench, metric, a, b, limit):
    ta, tb = median(s.seconds for s in a), median(s.seconds for s in b)
    ratio = ta / tb
    report.add(bench, metric, ms(ta), ms(tb), f"{ratio:.3f}", f"<= {limit}", ratio <= limit)
    ca, cb = median(s.cpu_seconds for s in a), median(s.cpu_seconds for s in b)
    report.notes.append(f"{bench}: CPU time (user+sys) medians {ms(ca)} vs {ms(cb)}, ratio "
                        f"{ca / cb:.3f}; wall ratio of the fastest runs "
                        f"{min(s.seconds for s in a) / min(s.seconds for s in b):.3f}")
    return ta, tb


# -- environment -------------------------------------------------------------------------
def tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise BenchError(f"{name} not found next to {sys.executable} nor on PATH: run "
                         "`make install` and use .venv/bin/python")
    return found


def clean_env(config_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "BUS_"))}
    env["XDG_CONFIG_HOME"] = str(config_dir)  # our config dir: <it>/bus, via platformdirs
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kib / 1024 / 1024:.1f} GiB RAM"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return (f"{os.cpu_count()} cores ({usable} usable), {model}{mem}; "
            f"{platform.python_implementation()} {platform.python_version()}; "
            f"{platform.system()} {platform.release()}; load avg "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


@contextlib.contextmanager
def emulator(tmp: Path, name: str):
    emu = launch(tmp / f"emulator-{name}", config=EMULATOR_CONFIG)
    try:
        yield emu
    finally:
        children = emu.descendants()
        rc = emu.stop()
        if rc != 0 or alive(children):
            raise BenchError(f"the emulator exited with {rc} or left processes behind")



@dataclass
class Context:
    pairs: int
    fast_pairs: int  # for commands that take < 0.3 s a run: more pairs, steadier medians
    tmp: Path
    config_dir: Path
    env: dict[str, str]
    report: Report

