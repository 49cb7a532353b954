"""Shared helpers for benchmarks: run a command, sample the whole process tree's memory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def tree_rss(proc: psutil.Process, metric: str = "rss") -> int:
    """Memory of a process and all its descendants: summed RSS (counts pages shared between
    processes once per process), or summed PSS (each shared page split among its sharers — the
    honest total for multi-process runs such as Ray's daemons, workers and object store)."""
    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_full_info().pss if metric == "pss" else p.memory_info().rss
    return total


def run_measured(cmd: list[str], env: dict | None = None, interval: float = 0.05, cwd: str | None = None,
                 metric: str = "rss") -> tuple[float, int]:
    """Wall seconds and peak memory (bytes, summed over the process tree; see ``tree_rss``) of a
    command. The sampler runs in this process: keep ``interval`` long where the tree has many
    processes, or the sampling itself takes CPU from the run on a small machine."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, cwd=cwd)
    ps = psutil.Process(p.pid)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(ps, metric))
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = p.wait()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}")
    return wall, peak


def make_corpus(n: int, out: Path) -> Path:
    """A corpus of n documents built from real paragraphs by ../shared/tools/make_corpus.py (cached)."""
    if out.exists():
        return out
    tool = SHARED / "tools" / "make_corpus.py"
    if not tool.exists():
        raise SystemExit(f"{tool} not found: benchmarks need ../shared beside the checkout (or pass --corpus)")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(tool), "--n", str(n), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def corpus_args(ap, n: int = 100_000, **extra):
    """The options every peer benchmark shares (--n, --workers, --skip-peers, --work, plus ``extra``:
    name -> (type, default)), parsed; returns (args, work dir, corpus of n real-paragraph docs)."""
    import tempfile

    ap.add_argument("--n", type=int, default=n)
    ap.add_argument("--workers", type=int, default=2)
    for name, (kind, default) in extra.items():
        ap.add_argument(f"--{name}", type=kind, default=default)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    return args, args.work, make_corpus(args.n, args.work / f"corpus_{args.n}.jsonl")
