"""Exact dedup's resolve alone (issue 19 item 3): peak memory, wall and CPU seconds of
``HashDedup.resolve`` on fingerprint files of realistic size, in a fresh process per run, with
``--baseline`` a frozen copy of another revision interleaved (``bench/recipe_time.py --freeze``):

    python bench/exact_resolve.py --rows 380000 1100000 3800000 --baseline /tmp/ref --rounds 2

The fingerprints are synthetic but shaped like a run's (``PassSink.commit``): parquet files of
``--rows-per-file`` rows (a 10 GB fineweb run: 3.8M rows in ~150 files), columns ``h_hi``, ``h_lo`` (uniform uint64), ``skip``,
``__shard``, ``__row`` (and ``value`` for ``--keep longest``), ``--dup`` of the rows repeating an
earlier key anywhere in the corpus (3%: the 10 GB run's exact dedup drops ~3%). They are made once
under ``--dir`` and read through ``passes.fingerprint_frame`` as the executor does. Each run prints
the process's peak anonymous memory (``Pss_Anon`` of /proc/self/smaps_rollup, sampled every 20 ms:
heaps and buffers, not the shared libraries' pages) and peak USS, wall and CPU seconds, the number
of decisions and a digest of decisions, counters and distributions, which must be the same for
both variants.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make(out: Path, rows: int, files: int, dup: float, value: bool, seed: int = 0) -> None:
    """Synthetic fingerprint files of one pass (``_work/pass-0/fp-*.parquet``) under ``out``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from thresher.pipeline.columns import ROW, SHARD
    from thresher.pipeline.layout import Layout

    rng = np.random.default_rng(seed)
    distinct = rows - int(rows * dup)
    hi = rng.integers(0, 2**64, distinct, dtype=np.uint64, endpoint=False)
    lo = rng.integers(0, 2**64, distinct, dtype=np.uint64, endpoint=False)
    pick = np.concatenate([np.arange(distinct), rng.integers(0, distinct, rows - distinct)])
    rng.shuffle(pick)  # duplicates anywhere: in other shards, before or after their first copy
    layout = Layout(str(out))
    layout.pass_dir(0).mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    for s in range(files):
        k = pick[bounds[s]:bounds[s + 1]]
        n = len(k)
        cols = {"h_hi": hi[k], "h_lo": lo[k], "skip": np.zeros(n, dtype=bool)}
        if value:
            cols["value"] = rng.integers(0, 50, n).astype(np.float64)  # ties, as lengths have
        t = pa.table({**cols, SHARD: np.full(n, s, dtype=np.int32), ROW: np.arange(n, dtype=np.int64)})
        pq.write_table(t, layout.fingerprints(0, s))


def child(out: str, files: int, keep: str, rows_per_partition: int | None) -> None:
    """One resolve in this process; prints a JSON line."""
    import polars as pl

    from thresher.operators.dedup import exact
    from thresher.operators.dedup.exact import ExactDedup
    from thresher.pipeline.executors.passes import fingerprint_frame
    from thresher.pipeline.layout import Layout

    peak = {"anon": 0, "uss": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            with open("/proc/self/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Pss_Anon:", "Private_Clean:", "Private_Dirty:")):
                        key = "anon" if line.startswith("Pss_Anon") else line.split(":")[0]
                        peak.setdefault("_" + key, 0)
                        peak["_" + key] = int(line.split()[1]) << 10
            peak["anon"] = max(peak["anon"], peak["_anon"])
            peak["uss"] = max(peak["uss"], peak["_Private_Clean"] + peak["_Private_Dirty"])
            time.sleep(0.02)

    if rows_per_partition:
        exact.ROWS_PER_PARTITION = rows_per_partition
    params = {"keep": keep} if keep != "first" else {}
    op = ExactDedup(ExactDedup.Params(**params))
    frame = fingerprint_frame(Layout(out), 0, files)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    time.sleep(0.1)
    base = dict(peak)
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    decided = op.resolve(frame)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.1)
    stop.set()
    th.join()
    digest = hashlib.sha256(decided.sort(decided.columns).write_ipc(None).getvalue())
    digest.update(json.dumps([op.take_counters(), op.take_distributions()], sort_keys=True).encode())
    print(json.dumps({"wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime, 3),
                      "peak_anon_mb": round(peak["anon"] / 2**20, 1), "peak_uss_mb": round(peak["uss"] / 2**20, 1),
                      "start_anon_mb": round(base["anon"] / 2**20, 1), "decided": decided.height,
                      "digest": digest.hexdigest()[:16], "polars": pl.__version__}))


def run(out: Path, files: int, keep: str, baseline: str | None, rows_per_partition: int | None) -> dict:
    env = dict(os.environ)
    cwd = None
    if baseline:
        env["PYTHONPATH"] = f"{baseline}/boot:{baseline}/src"
        cwd = "/"  # not the checkout: it would come first on sys.path
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(out), "--files", str(files),
                        "--keep", keep, *(["--rows-per-partition", str(rows_per_partition)] if rows_per_partition else [])],
                       env=env, cwd=cwd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[380_000, 1_100_000, 3_800_000])
    ap.add_argument("--rows-per-file", type=int, default=25_300, help="fingerprint rows per file (a 10 GB "
                    "fineweb run: 3.8M rows in 150 files)")
    ap.add_argument("--rows-per-partition", type=int, help="exact.ROWS_PER_PARTITION in the working tree's runs")
    ap.add_argument("--dup", type=float, default=0.03)
    ap.add_argument("--keep", choices=["first", "longest"], default="first")
    ap.add_argument("--dir", default="/tmp/exact_resolve")
    ap.add_argument("--baseline", help="a frozen copy (bench/recipe_time.py --freeze) to interleave with")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--files", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.files, args.keep, args.rows_per_partition)
        return
    print(f"load {os.getloadavg()}", flush=True)
    variants = ([("baseline", args.baseline)] if args.baseline else []) + [("tree", None)]
    for rows in args.rows:
        files = max(1, round(rows / args.rows_per_file))
        out = Path(args.dir) / f"{rows}-{files}-{args.dup}-{args.keep}"
        if not (out / "_work" / "pass-0" / f"fp-{files - 1:05d}.parquet").exists():
            make(out, rows, files, args.dup, args.keep != "first")
        results: dict[str, list[dict]] = {name: [] for name, _ in variants}
        for _ in range(args.rounds):
            for name, base in variants:
                results[name].append(run(out, files, args.keep, base, None if base else args.rows_per_partition))
        for name, rs in results.items():
            med = {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "peak_anon_mb", "peak_uss_mb")}
            print(json.dumps({"rows": rows, "files": files, "variant": name, **med, "start_anon_mb": rs[0]["start_anon_mb"],
                              "decided": rs[0]["decided"], "digests": sorted({r["digest"] for r in rs}),
                              "wall_runs": [r["wall_s"] for r in rs], "cpu_runs": [r["cpu_s"] for r in rs]}), flush=True)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
