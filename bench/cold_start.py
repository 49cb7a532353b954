"""Cold start (issue 19 item 6): the shipped `fineweb` recipe on 2,000 real-paragraph documents
with an empty numba kernel cache (a first-ever run: every kernel it uses is compiled) and with a
warm one, and `thresher run quickstart` warm; each run a fresh `python -m thresher` process, the
median of ``--repeat`` interleaved runs.

    python bench/cold_start.py                 # 2,000 docs, 3 repeats
    python bench/cold_start.py --repeat 5 --workers 2

The cold runs get a new, empty ``NUMBA_CACHE_DIR`` each; the warm runs share one filled by a run
beforehand (not timed). Targets: cold within 2x of warm; quickstart under 3 s warm. "fineweb cold,
no precompile" is a cold run with ``THRESHER_PRECOMPILE=0`` (each worker compiles every kernel it
calls, as before pipeline/precompile.py), in the same rounds for the comparison.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import make_corpus, run_measured  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished descendants: the run and its workers
    return r.ru_utime + r.ru_stime


def _thresher(recipe: str, out: Path, cache: Path, inputs: Path | None, workers: int,
              **env: str) -> tuple[float, float]:
    """Wall and CPU seconds (the process tree's) of one `thresher run` in a fresh process with
    numba's cache at ``cache``. CPU is the steadier figure on a loaded machine."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "thresher", "run", recipe, "--output", str(out), "-q", "--overwrite"]
    if inputs is not None:
        cmd += ["--input", str(inputs), "--workers", str(workers)]
    cpu = _cpu()
    wall = run_measured(cmd, env={"NUMBA_CACHE_DIR": str(cache), **env}, interval=0.5)[0]
    return wall, _cpu() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or make_corpus(args.n, args.work / f"corpus_{args.n}.jsonl")
    out = args.work / "out-cold-start"
    warm_cache = Path(tempfile.mkdtemp(prefix="numba-warm-", dir=args.work))
    _thresher("fineweb", out, warm_cache, corpus, args.workers)  # fills the warm cache
    _thresher("quickstart", out, warm_cache, None, args.workers)
    runs: dict[str, list[tuple[float, float]]] = {"fineweb cold": [], "fineweb cold, no precompile": [],
                                                  "fineweb warm": [], "quickstart warm": []}
    for _ in range(args.repeat):
        for name, env in (("fineweb cold", {}), ("fineweb cold, no precompile", {"THRESHER_PRECOMPILE": "0"})):
            cold_cache = Path(tempfile.mkdtemp(prefix="numba-cold-", dir=args.work))
            runs[name].append(_thresher("fineweb", out, cold_cache, corpus, args.workers, **env))
            shutil.rmtree(cold_cache, ignore_errors=True)
        runs["fineweb warm"].append(_thresher("fineweb", out, warm_cache, corpus, args.workers))
        runs["quickstart warm"].append(_thresher("quickstart", out, warm_cache, None, args.workers))
    shutil.rmtree(warm_cache, ignore_errors=True)
    med = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    print(f"\ncorpus: {corpus} ({args.n:,} docs); {args.workers} workers; machine: {os.cpu_count()} cores; "
          f"load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; {time.strftime('%Y-%m-%d')}; median of {args.repeat} interleaved run(s)")
    print("| run | wall s (runs) | CPU s | target |")
    print("|---|---|---|---|")
    for k, v in runs.items():
        vs_warm = f"{med[k] / med['fineweb warm']:.2f}x wall, {cpu[k] / cpu['fineweb warm']:.2f}x CPU"
        target = {"fineweb cold": f"<= 2x warm: {vs_warm}", "fineweb cold, no precompile": vs_warm,
                  "quickstart warm": "< 3 s"}.get(k, "")
        print(f"| {k} | {med[k]:.1f} ({', '.join(f'{w:.1f}' for w, _ in v)}) | {cpu[k]:.1f} | {target} |")


if __name__ == "__main__":
    main()
