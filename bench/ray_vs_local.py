"""Ray vs local on the same machine: the shipped `fineweb` recipe (HTML extraction, language ID in
model actors, Gopher/C4/FineWeb rules, exact and MinHash dedup — resolved by Ray Data shuffles on
Ray —, PII) on ~1 GB of real paragraphs, wall time and peak RSS (whole process tree).

    python bench/ray_vs_local.py               # ~1 GB corpus (480k docs)
    python bench/ray_vs_local.py --n 100000

Target (issue 5): Ray within 1.3x of local wall time on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
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
    ap.add_argument("--model-tasks", action="store_true", help="also run Ray with model ops in tasks (model_actors: false)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or make_corpus(args.n, args.work / f"corpus_{args.n}.jsonl")
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        for executor in ("local", "ray", "ray-tasks"):
            if executor == "ray-tasks" and not args.model_tasks:
                continue
            out = args.work / f"out-{executor}-{workers}"
            shutil.rmtree(out, ignore_errors=True)
            recipe = args.work / f"recipe-{executor}-{workers}.yaml"
            spec = {"type": "local" if executor == "local" else "ray", "workers": workers}
            if executor == "ray-tasks":
                spec["model_actors"] = False
            recipe.write_text(yaml.safe_dump({
                "input": {"paths": [str(corpus)], "shard_size_mb": 32},
                "output": {"path": str(out), "rows_per_shard": 1_000_000, "trace_samples": 0},
                "executor": spec, "seed": 42, "process": PROCESS}))
            wall, rss = run_measured([sys.executable, "-m", "pipeline.cli", "run", str(recipe), "-q"],
                                     env={"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"})
            rows.append((executor, workers, wall, rss, _row_stream_digest(out)))
            shutil.rmtree(out, ignore_errors=True)
    print(f"\ncorpus: {corpus} ({corpus.stat().st_size / 1e9:.2f} GB); machine: {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}")
    print("| executor | workers | wall s | peak RSS MB | Ray / local | output sha256 |\n|---|---|---|---|---|---|")
    local = {w: t for e, w, t, _, _ in rows if e == "local"}
    for e, w, t, m, digest in rows:
        ratio = f"{t / local[w]:.2f}x" if e != "local" else ""
        print(f"| {e} | {w} | {t:.1f} | {m / 2**20:,.0f} | {ratio} | {digest[:12]} |")


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
