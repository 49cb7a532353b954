"""Where a MinHash global step's memory goes, step by step (issue 19 item 3): runs ``resolve_pass``
in this process on a finished pass's fingerprints and samples this process's PSS every 50 ms
(psutil; tracemalloc does not see Arrow, polars or numpy's large buffers), attributing each sample
to the step running then (``_candidate_edges``, ``_verify``, ``components``, ``_decide``,
``write_decisions``). Make the fingerprints with ``bench/scale.py --resolve-from`` (or use a
run's ``_work``), e.g. 10x the 1 GB run's:

    python bench/resolve_steps.py RECIPE.yaml OUT_DIR SHARDS [--pass K]

OUT_DIR holds ``_work/pass-K/fp-*.parquet`` and ``done-*.json``; decisions are written there.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import threading
import time

import psutil

from thresher.operators.dedup import minhash
from thresher.pipeline.executors import passes
from thresher.pipeline.recipe import load_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe")
    ap.add_argument("out_dir")
    ap.add_argument("shards", type=int)
    ap.add_argument("--pass", dest="k", type=int, default=0)
    args = ap.parse_args()
    proc = psutil.Process()
    now = {"step": "start"}
    peaks: dict[str, int] = {}
    anon = [0]  # peak anonymous PSS: heaps and buffers, not the shared libraries' pages (their PSS
    # depends on how many other processes on the machine map polars or numba at that moment)

    def sample():
        while True:
            v = proc.memory_full_info().pss
            peaks[now["step"]] = max(peaks.get(now["step"], 0), v)
            with open("/proc/self/smaps_rollup") as f:
                anon[0] = max(anon[0], next((int(x.split()[1]) << 10 for x in f if x.startswith("Pss_Anon:")), 0))
            time.sleep(0.05)

    def wrap(owner, name):
        f = getattr(owner, name)

        @functools.wraps(f)
        def g(*a, **k):
            prev, now["step"], t = now["step"], name, time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                print(f"  {name}: {time.perf_counter() - t:.1f} s", flush=True)
                now["step"] = prev
        setattr(owner, name, g)

    for name in ("_candidate_edges", "_verify", "_decide"):
        wrap(minhash.MinHashDedup, name)
    wrap(minhash, "components")
    wrap(passes, "write_decisions")
    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    info = passes.resolve_pass(load_recipe(args.recipe), args.out_dir, args.k, args.shards)
    time.sleep(0.1)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"decided": info["decided"], "wall_s": round(time.perf_counter() - t, 1),
                      "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "peak_pss_mb": max(peaks.values()) >> 20,
                      "peak_anon_mb": anon[0] >> 20,
                      "step_peak_pss_mb": {k: v >> 20 for k, v in peaks.items()}}))


if __name__ == "__main__":
    main()
