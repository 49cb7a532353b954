"""IO floor: a zero-op recipe versus a plain pyarrow read + write of the same corpus.

    python bench/io_floor.py                # ~1 GB corpus (480k docs) built from real paragraphs
    python bench/io_floor.py --n 100000     # smaller

Targets (issue 2): engine within 1.3x of the plain pyarrow time; peak RSS under 1 GB for 1 GB
of input. Each case runs in its own process; memory is the whole process tree's RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import make_corpus, run_measured  # noqa: E402

PLAIN_JSONL = """
import sys, pyarrow.json as pj, polars as pl
t = pj.read_json(sys.argv[1])
with open(sys.argv[2], "wb") as f:
    pl.from_arrow(t).write_ndjson(f)
"""
PLAIN_PARQUET = """
import sys, pyarrow.parquet as pq
pq.write_table(pq.read_table(sys.argv[1]), sys.argv[2], compression="zstd")
"""
RECIPE = """
input: {{paths: ["{inp}"]}}
output: {{path: "{out}", format: {fmt}, rows_per_shard: 1000000}}
executor: {{type: local, workers: {workers}}}
process: []
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=480_000, help="documents (480k ~ 1 GB)")
    ap.add_argument("--corpus", type=Path, help="use this JSONL corpus instead of building one")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    jsonl = args.corpus or make_corpus(args.n, work / f"corpus_{args.n}.jsonl")
    parquet = work / (jsonl.stem + ".parquet")
    if not parquet.exists():
        import pyarrow.json as pj
        import pyarrow.parquet as pq

        pq.write_table(pj.read_json(str(jsonl)), parquet, compression="zstd", row_group_size=50_000)
    size = jsonl.stat().st_size
    py = sys.executable
    rows = []
    for fmt, src, plain in (("jsonl", jsonl, PLAIN_JSONL), ("parquet", parquet, PLAIN_PARQUET)):
        out = work / f"out-plain.{fmt}"
        t_plain, m_plain = run_measured([py, "-c", plain, str(src), str(out)])
        out.unlink(missing_ok=True)
        outdir = work / f"out-engine-{fmt}"
        shutil.rmtree(outdir, ignore_errors=True)
        recipe = work / f"zero-op-{fmt}.yaml"
        recipe.write_text(RECIPE.format(inp=src, out=outdir, fmt=fmt, workers=args.workers))
        t_eng, m_eng = run_measured([py, "-m", "thresher", "run", str(recipe), "-q"],
                                    env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        shutil.rmtree(outdir, ignore_errors=True)
        rows.append((fmt, t_plain, m_plain, t_eng, m_eng))
    print(f"corpus: {jsonl} ({size / 1e9:.2f} GB JSONL, {parquet.stat().st_size / 1e9:.2f} GB Parquet), "
          f"workers={args.workers or os.cpu_count()}, cpus={os.cpu_count()}")
    print("| format | plain pyarrow s | plain peak RSS MB | engine s | engine peak RSS MB | engine / plain |")
    print("|---|---|---|---|---|---|")
    for fmt, tp, mp, te, me in rows:
        print(f"| {fmt} | {tp:.1f} | {mp / 2**20:.0f} | {te:.1f} | {me / 2**20:.0f} | {te / tp:.2f}x |")


if __name__ == "__main__":
    main()
