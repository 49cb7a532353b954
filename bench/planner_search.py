"""How long the capacity planner's search takes (the figures the unit tests must not time).

    python bench/planner_search.py            # median of 5 runs of each case

Cases:
- ``405b-16k``: Llama 3.1 405B on 16,384 H100s, seq 8,192, 16M-token batches (the Llama 3 paper's
  run; tests/capacity/test_search.py checks the plan's MFU against the published 38-43%);
- ``catalogue``: Llama 2 7B over every GPU in the catalogue, log-normal lengths (700 mean, 50k rows).

A person waits for ``thresher plan``: both should answer well inside a second or two.
"""

from __future__ import annotations

import argparse
import statistics
import time

from thresher.capacity.hardware import catalogue, get_gpu
from thresher.capacity.models import get_model
from thresher.capacity.search import search
from thresher.capacity.stats import LengthStats
from thresher.capacity.training import TrainInputs


def cases():
    h100, l405, l7 = get_gpu("h100-sxm"), get_model("llama-3.1-405b"), get_model("llama-2-7b")
    yield "405b-16k", lambda: search(
        l405, [h100], TrainInputs(data=LengthStats.constant(8192, 2048 * 100), max_len=8192,
                                  global_batch_tokens=16 * 2 ** 20), counts=(16384,), methods=("full",))
    yield "catalogue", lambda: search(
        l7, list(catalogue().values()), TrainInputs(data=LengthStats.lognormal(700, 2500, rows=50_000)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    for name, fn in cases():
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        print(f"{name:10s} median {statistics.median(times):.3f} s  min {min(times):.3f} s  "
              f"max {max(times):.3f} s  ({args.repeat} runs)")


if __name__ == "__main__":
    main()
