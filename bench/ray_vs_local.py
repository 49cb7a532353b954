"""Ray vs local on the same machine: the shipped `fineweb` recipe (HTML extraction, language ID in
model actors, Gopher/C4/FineWeb rules, exact and MinHash dedup — resolved by Ray Data shuffles on
Ray —, PII) on ~1 GB of real paragraphs, wall time and peak RSS (whole process tree).

    python bench/ray_vs_local.py               # ~1 GB corpus (480k docs)
    python bench/ray_vs_local.py --n 100000 --repeat 3

Target (issue 5): Ray within 1.3x of local wall time on 2 cores. Small shared machines drift by
10-20% between runs of the same job, so runs are interleaved (local, ray, local, ray, ...) and the
median of ``--repeat`` runs is reported, with the ledger's per-pass times (start-up, each pass, each
global op's resolve) that say where any difference goes. Memory is the peak of the process tree's
summed PSS (Ray's daemons, workers and shared object store counted once), sampled every 0.25 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import make_corpus, run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROCESS = yaml.safe_load((ROOT / "recipes" / "fineweb.yaml").read_text())["process"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=480_000)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved runs of each configuration (median reported)")
    ap.add_argument("--model-tasks", action="store_true", help="also run Ray with model ops in tasks (model_actors: false)")
    ap.add_argument("--shard-mb", type=int, default=32, help="input shard size (more workers need more shards)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or make_corpus(args.n, args.work / f"corpus_{args.n}.jsonl")
    runs: dict[tuple[str, int], list[tuple[float, int, str, dict]]] = {}
    configs = [(e, int(w)) for w in args.workers.split(",")
               for e in ("local", "ray", "ray-tasks") if e != "ray-tasks" or args.model_tasks]
    for _ in range(args.repeat):
        for executor, workers in configs:
            runs.setdefault((executor, workers), []).append(_run_once(args.work, corpus, executor, workers, args.shard_mb))
    print(f"\ncorpus: {corpus} ({corpus.stat().st_size / 1e9:.2f} GB); machine: {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}; median of {args.repeat} interleaved run(s)")
    print("| executor | workers | wall s (runs) | peak PSS MB | Ray / local | start s | passes s (resolve s) | output sha256 |")
    print("|---|---|---|---|---|---|---|---|")
    local = {w: statistics.median(r[0] for r in rs) for (e, w), rs in runs.items() if e == "local"}
    for (e, w), rs in runs.items():
        wall = statistics.median(r[0] for r in rs)
        mid = min(rs, key=lambda r: abs(r[0] - wall))  # the run nearest the median, for its breakdown
        digests = {r[2][:12] for r in rs}
        ratio = f"{wall / local[w]:.2f}x" if e != "local" else ""
        walls = ", ".join(f"{r[0]:.0f}" for r in rs)
        passes = " / ".join(f"{p['seconds']:.0f}" + (f" ({p['resolve_seconds']:.0f})" if "resolve_seconds" in p else "")
                            for p in mid[3]["passes"])
        print(f"| {e} | {w} | {wall:.1f} ({walls}) | {max(r[1] for r in rs) / 2**20:,.0f} | {ratio} | "
              f"{mid[3]['start_seconds']:.1f} | {passes} | {', '.join(sorted(digests))} |")


def _run_once(work: Path, corpus: Path, executor: str, workers: int, shard_mb: int = 32) -> tuple[float, int, str, dict]:
    """One run: wall seconds, peak PSS bytes, output digest, the ledger's timings."""
    out = work / f"out-{executor}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    recipe = work / f"recipe-{executor}-{workers}.yaml"
    spec = {"type": "local" if executor == "local" else "ray", "workers": workers}
    if executor == "ray-tasks":
        spec["model_actors"] = False
    recipe.write_text(yaml.safe_dump({
        "input": {"paths": [str(corpus)], "shard_size_mb": shard_mb},
        "output": {"path": str(out), "rows_per_shard": 1_000_000, "trace_samples": 0},
        "executor": spec, "seed": 42, "process": PROCESS}))
    wall, pss = run_measured([sys.executable, "-m", "thresher", "run", str(recipe), "-q"],
                             env={"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "RAY_USAGE_STATS_ENABLED": "0"},
                             interval=0.25, metric="pss")
    timings = json.loads((out / "ledger.json").read_text())["run"]["timings"]
    digest = _row_stream_digest(out)
    shutil.rmtree(out, ignore_errors=True)
    return wall, pss, digest, timings


def _row_stream_digest(out: Path) -> str:
    """SHA-256 of the output rows in file order (Ray and local must agree)."""
    h = hashlib.sha256()
    for f in sorted((out / "data").glob("part-*")):
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


if __name__ == "__main__":
    main()
