"""`python -m bench.launcher CMD ARGS...`: run CMD, wait for it, print its peak RSS as the last line.

A small launcher between the benchmark and the measured process. A child's ru_maxrss starts from
the peak RSS of the process image it was exec'd from: started straight from the (multi-GB)
benchmark it would report the benchmark's own peak. The launcher is a fresh, small Python (the
standard library only; bench/__init__.py imports nothing); it starts the stage, waits for it with
wait4 (whose rusage covers the stage and its reaped descendants: max, not sum) and prints

    peak_rss_kib=N main_kib=N worker_kib=N total_kib=N

main, worker (the largest) and total (all at once) are sampled from /proc every 50 ms. Linux only.
Exits with the stage's exit code.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time


def rss(pid: int) -> int:
    """Resident set size of `pid` in KiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def tree(pid: int) -> list[int]:
    """Every descendant of `pid`."""
    kids = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return kids + [g for k in kids for g in tree(k)]


def sample(pid: int, peak: dict, done: threading.Event) -> None:
    """Update `peak` (KiB) every 50 ms until `done` (not p.poll(): it could reap the child before wait4)."""
    while not done.is_set():
        m, w = rss(pid), [rss(k) for k in tree(pid)]
        peak.update(main=max(peak["main"], m), worker=max([peak["worker"], *w]), total=max(peak["total"], m + sum(w)))
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    p = subprocess.Popen(argv)
    peak, done = {"main": 0, "worker": 0, "total": 0}, threading.Event()
    threading.Thread(target=sample, args=(p.pid, peak, done), daemon=True).start()
    _, status, usage = os.wait4(p.pid, 0)
    done.set()
    p.returncode = os.waitstatus_to_exitcode(status)
    print(f"peak_rss_kib={usage.ru_maxrss} main_kib={peak['main']} worker_kib={peak['worker']} "
          f"total_kib={peak['total']}", flush=True)
    return p.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
