"""`thresher analyze` against `thresher run` of the same recipe, on the same corpus.

    python bench/analyze.py               # ~1 GB corpus (480k docs) built from real paragraphs
    python bench/analyze.py --n 100000    # ~200 MB

Target (issue 14): analysis streams — peak memory bounded for 1 GB of input — at no worse than
the run's speed. The analysis computes every filter's stats on *every* row (a run stops computing
a row's stats once a filter drops it) and writes one small stats row per row instead of the text;
the "tokens" case also counts cl100k tokens per row. Each case runs in its own process; memory is
the whole process tree's PSS; CPU seconds are the process tree's user + system time (a fairer
comparison than wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import make_corpus, run_measured  # noqa: E402

RECIPE = """
input: {{paths: ["{inp}"]}}
output: {{path: "{out}", format: jsonl}}
executor: {{type: local, workers: {workers}}}
policy: {{max_quarantine_fraction: 0.5}}
process:
  - whitespace_normalize: {{}}
  - gopher_repetition_filter: {{}}
  - gopher_quality_filter: {{}}
  - text_length_filter: {{min_words: 50}}
  - exact_dedup: {{}}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=480_000)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--no-full-tokens", action="store_true", help="leave out the case that counts every row's tokens")
    args = ap.parse_args()
    corpus = args.corpus or make_corpus(args.n, Path(tempfile.gettempdir()) / "thresher-bench" / f"corpus_{args.n}.jsonl")
    work = Path(tempfile.mkdtemp(prefix="thresher-bench-analyze-"))
    thresher = [sys.executable, "-m", "thresher"]
    recipe = work / "recipe.yaml"
    recipe.write_text(RECIPE.format(inp=corpus, out=work / "run", workers=args.workers))
    cases = {
        "run": [*thresher, "run", str(recipe), "-q"],
        "analyze --no-tokens": [*thresher, "analyze", str(recipe), "--output", str(work / "an1"), "--no-tokens", "-q"],
        "analyze (tokens on a 5% sample, the default)": [*thresher, "analyze", str(recipe), "--output",
                                                         str(work / "an2"), "-q"],
        "analyze --token-sample 1 (every row)": [*thresher, "analyze", str(recipe), "--output", str(work / "an3"),
                                                 "--token-sample", "1", "-q"],
    }
    if args.no_full_tokens:
        cases.pop("analyze --token-sample 1 (every row)")
    outs = {"run": "run", "analyze --no-tokens": "an1", "analyze (tokens on a 5% sample, the default)": "an2",
            "analyze --token-sample 1 (every row)": "an3"}
    size = corpus.stat().st_size
    print(f"corpus: {corpus} ({size / 1e6:,.0f} MB)")
    print("| case | rows | wall s | CPU s | MB/s | peak PSS MB | passes s (resolve s) |")
    print("|---|---|---|---|---|---|---|")
    try:
        for name, cmd in cases.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall, peak = run_measured(cmd, metric="pss", interval=0.5)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            ledger = json.loads((work / outs[name] / "ledger.json").read_text())
            rows = ledger["totals"]["input"]
            passes = " / ".join(f"{p['seconds']:.0f}" + (f" ({p['resolve_seconds']:.0f})" if "resolve_seconds" in p else "")
                                for p in ledger["run"]["timings"]["passes"])
            print(f"| {name} | {rows:,} | {wall:.1f} | {cpu:.1f} | {size / 1e6 / wall:.1f} | {peak / 2**20:,.0f} | "
                  f"{passes} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
