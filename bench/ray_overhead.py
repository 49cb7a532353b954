"""The terms of the Ray scaling model (docs/design.md, "Scaling model (issue 19)"), measured on this
machine: Ray's start-up, the per-task cost of a pass (a no-op recipe over N tiny shards: the slope
of pass seconds over N), the per-shuffle cost (an ``exact_dedup`` resolve on a handful of rows),
the driver's per-block bookkeeping, and the union-find that finishes small duplicate graphs.

    python bench/ray_overhead.py                 # shards 4,32,128; 2 workers
    python bench/ray_overhead.py --shards 8,64 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _corpus(work: Path, n_shards: int) -> Path:
    d = work / f"tiny-{n_shards}"
    if not d.exists():
        d.mkdir(parents=True)
        for i in range(n_shards):
            (d / f"f{i:04d}.jsonl").write_text("".join(json.dumps({"id": f"{i}-{j}", "text": f"doc {j % 7} of file"}) + "\n"
                                                       for j in range(20)))
    return d


def _run(work: Path, corpus: Path, executor: str, workers: int, process: list) -> dict:
    out = work / f"out-{executor}"
    recipe = work / f"recipe-{executor}.yaml"
    recipe.write_text(yaml.safe_dump({"input": {"paths": [str(corpus)]}, "output": {"path": str(out), "trace_samples": 0},
                                      "executor": {"type": executor, "workers": workers}, "process": process}))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "thresher", "run", str(recipe), "-q", "--overwrite"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    timings = json.loads((out / "ledger.json").read_text())["run"]["timings"]
    timings["wall"] = time.perf_counter() - t0
    return timings


def per_task(work: Path, shard_counts: list[int], workers: int) -> None:
    print("| executor | shards | wall s | start s | pass s | resolve s (exact_dedup) |")
    print("|---|---|---|---|---|---|")
    for n in shard_counts:
        corpus = _corpus(work, n)
        for executor in ("local", "ray"):
            t = _run(work, corpus, executor, workers, [{"exact_dedup": {}}])
            passes = t["passes"]
            print(f"| {executor} | {n} | {t['wall']:.1f} | {t.get('start_seconds', 0):.1f} | "
                  f"{passes[0]['seconds']:.2f} + {passes[1]['seconds']:.2f} | {passes[0].get('resolve_seconds', 0):.2f} |",
                  flush=True)


def shuffles(workers: int) -> None:
    """One Ray session: a group, a co-group and the connected components of a small graph."""
    import polars as pl
    import ray

    from thresher.operators.dedup.clusters import components
    from thresher.pipeline.executors.ray_shuffle import Blocks, RayShuffle

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    sh = RayShuffle(workers)

    def blocks(frame: pl.DataFrame, n: int = 4) -> Blocks:  # a dataset of n blocks in the object store
        step = -(-frame.height // n)
        return Blocks([ray.put(frame.slice(i, step).to_arrow()) for i in range(0, frame.height, step)])

    rng = np.random.default_rng(0)
    df = pl.DataFrame({"k": rng.integers(0, 1000, 10_000)})
    s, d = rng.integers(0, 20_000, 5_000), rng.integers(0, 20_000, 5_000)
    edges = pl.DataFrame({"s": s, "d": d})

    def group():
        sh.collect(sh.group(blocks(df), "k", lambda x: x.group_by("k").len()),
                   {"k": pl.Int64, "len": pl.UInt32})

    def co_group():
        ds = blocks(df)
        sh.collect(sh.co_group(ds, ds, "k", "k", {"k": pl.Int64}, {"k": pl.Int64}, lambda a, b: a.head(1)), {"k": pl.Int64})

    def comps(local_edges):
        def run():
            sh2 = RayShuffle(workers, local_edges=local_edges)
            sh2.collect(sh2.components(blocks(edges, 1), local=components),
                        {"gid": pl.Int64, "root": pl.Int64})
        return run

    for name, fn in (("group (1 shuffle)", group), ("co_group (1 shuffle of 2 inputs)", co_group),
                     ("components, 5k edges (default)", comps(sh.local_edges)),
                     ("components, 5k edges, star rounds only", comps(-1))):
        fn()  # warm: workers started, functions shipped
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        print(f"{name}: {statistics.median(ts):.2f} s (runs {', '.join(f'{t:.2f}' for t in ts)})", flush=True)
    ray.shutdown()


def driver_and_union_find() -> None:
    """The driver's per-block bookkeeping for the fineweb recipe, and union-find per edge."""
    from thresher.operators.dedup.clusters import components
    from thresher.pipeline.executors.passes import empty_ledger, ops_for
    from thresher.pipeline.executors.ray_data import merge_summaries
    from thresher.pipeline.recipe import load_recipe

    recipe = load_recipe("fineweb", inputs=["x.jsonl"])
    ops, _ = ops_for(recipe)
    led = empty_ledger(ops).to_dict()["ops"]
    one = json.dumps({"shard": 0, "block": 0, "rows": 1000, "files": ["x"], "ledger": led, "trace": {},
                      "quarantined": 0, "profile": {}, "seconds": 1.0})
    n = 2000
    t0 = time.perf_counter()
    pieces = [dict(json.loads(one), block=b) for b in range(n)]
    merge_summaries(recipe, 0, 0, pieces)
    print(f"driver bookkeeping per block (fineweb, {len(ops)} ops): {(time.perf_counter() - t0) / n * 1e3:.2f} ms")
    rng = np.random.default_rng(1)
    for m in (200_000, 2_000_000):
        s, d = rng.integers(0, 2 * m, m), rng.integers(0, 2 * m, m)
        components(s[:10], d[:10])
        t0 = time.perf_counter()
        components(s, d)
        print(f"union-find of {m:,} edges in one process: {time.perf_counter() - t0:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="4,32,128")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-ray-overhead")
    ap.add_argument("--skip-runs", action="store_true", help="only the in-process measurements")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, {args.workers} workers")
    driver_and_union_find()
    shuffles(args.workers)
    if not args.skip_runs:
        per_task(args.work, [int(x) for x in args.shards.split(",")], args.workers)


if __name__ == "__main__":
    main()
