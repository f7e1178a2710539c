"""Run one command and write `returncode seconds maxrss_kib utime stime` to a file.

    python -I -S _launch.py RESULT_FILE -- ARGV...

Why a launcher: on Linux, the peak RSS that wait4() reports for a child includes the
memory of the process that spawned it (at exec, the kernel folds the old address space's
high-water mark into the child's: with vfork or posix_spawn that is the spawner's own
peak, with fork its current size). The benchmark runner grows to tens of MiB, so its
children would all look at least that big. This launcher is a bare interpreter (-I -S:
no site-packages, only os/sys/time), a few MiB, so the figure it gets from wait4() is
the command's own peak whenever that exceeds the launcher's few MiB (every Python CLI
does). It also times the command itself, so its own startup is not counted.

stdin, stdout and stderr are passed through unchanged; the environment is ours.
"""

import os
import sys
import time


def main() -> int:
    result_file, sep, *argv = sys.argv[1:]
    if sep != "--" or not argv:
        print("usage: _launch.py RESULT_FILE -- ARGV...", file=sys.stderr)
        return 2
    started = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    with open(result_file, "w") as f:
        f.write(f"{os.waitstatus_to_exitcode(status)} {elapsed!r} {usage.ru_maxrss} "
                f"{usage.ru_utime!r} {usage.ru_stime!r}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
