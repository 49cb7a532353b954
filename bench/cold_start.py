"""Cold start (issue 19 item 6): the shipped `fineweb` recipe on 2,000 real-paragraph documents
with an empty numba kernel cache (a first-ever run) and with a warm one, and `thresher run
quickstart` warm; each run a fresh `python -m thresher` process, the median of ``--repeat``
interleaved runs.

    python bench/cold_start.py                 # 2,000 docs, 3 repeats
    python bench/cold_start.py --repeat 5 --workers 2
    python bench/cold_start.py --code-n 20000  # also: shipped (generic-CPU) vs host-compiled kernels, warm
    python bench/cold_start.py --code-ops 20000 --repeat 5  # only that, per op, CPU seconds in one process

The cold runs get a new, empty ``NUMBA_CACHE_DIR`` each; the warm runs share one filled by a run
beforehand (not timed) that compiled its kernels here (host-tuned code). Targets: cold within 2x
of warm; quickstart under 3 s warm. "fineweb cold" loads the kernels shipped with thresher
(pipeline/shipped_kernels.py); "fineweb cold, compiling" is the same with
``THRESHER_SHIPPED_KERNELS=0``: every kernel it calls is compiled, as before.
``--code-n N``: the shipped kernels are compiled for a generic x86-64 CPU; warm runs on N documents
with a cache filled by compiling here (host-tuned code) and with one filled from the shipped
kernels, interleaved, with each op's seconds (ledger.json), say what that costs. ``--code-ops N``
says it per op and steadier on a loaded machine: each of fineweb's ops with kernels run with
``apply_op`` on the same N documents in one process per cache, the CPU seconds of that process.
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--code-n", type=int, default=0, help="also compare shipped vs host-compiled kernels on N docs")
    ap.add_argument("--code-ops", type=int, default=0, help="only: per-op CPU s, shipped vs host-compiled, N docs")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.code_ops:
        code_ops(args)
        return
    corpus = args.corpus or make_corpus(args.n, args.work / f"corpus_{args.n}.jsonl")
    out = args.work / "out-cold-start"
    warm_cache = Path(tempfile.mkdtemp(prefix="numba-warm-", dir=args.work))
    # fills the warm cache, compiling here (host-tuned code: the strictest warm to compare with)
    _thresher("fineweb", out, warm_cache, corpus, args.workers, THRESHER_SHIPPED_KERNELS="0")
    _thresher("quickstart", out, warm_cache, None, args.workers, THRESHER_SHIPPED_KERNELS="0")
    runs: dict[str, list[tuple[float, float]]] = {"fineweb cold": [], "fineweb cold, compiling": [],
                                                  "fineweb warm": [], "quickstart warm": []}
    for _ in range(args.repeat):
        for name, env in (("fineweb cold", {}), ("fineweb cold, compiling", {"THRESHER_SHIPPED_KERNELS": "0"})):
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
        target = {"fineweb cold": f"<= 2x warm: {vs_warm}", "fineweb cold, compiling": vs_warm,
                  "quickstart warm": "< 3 s"}.get(k, "")
        print(f"| {k} | {med[k]:.1f} ({', '.join(f'{w:.1f}' for w, _ in v)}) | {cpu[k]:.1f} | {target} |")

    if args.code_n:
        code_cost(args)


def code_cost(args) -> None:
    """Warm fineweb runs on ``--code-n`` documents: kernels compiled here (host CPU) vs the shipped
    ones (generic x86-64), interleaved; wall, CPU and each op's seconds, medians."""
    corpus = make_corpus(args.code_n, args.work / f"corpus_{args.code_n}.jsonl")
    out = args.work / "out-code-cost"
    caches = {"host-compiled": ({"THRESHER_SHIPPED_KERNELS": "0"}, Path(tempfile.mkdtemp(prefix="numba-host-", dir=args.work))),
              "shipped (generic)": ({}, Path(tempfile.mkdtemp(prefix="numba-shipped-", dir=args.work)))}
    small = make_corpus(200, args.work / "corpus_200.jsonl")
    for env, cache in caches.values():  # fill: compile here, or seed from the bundle
        _thresher("fineweb", out, cache, small, args.workers, **env)
    load0 = os.getloadavg()[0]
    runs: dict[str, list[tuple[float, float, dict[str, float]]]] = {k: [] for k in caches}
    for i in range(args.repeat):
        for name in (list(caches) if i % 2 == 0 else list(caches)[::-1]):
            wall, cpu = _thresher("fineweb", out, caches[name][1], corpus, args.workers)
            ops = {k: v["seconds"] for k, v in json.loads((out / "ledger.json").read_text())["ops"].items()}
            runs[name].append((wall, cpu, ops))
    for _, cache in caches.values():
        shutil.rmtree(cache, ignore_errors=True)
    print(f"\nwarm fineweb on {args.code_n:,} docs, {args.workers} workers; load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; median of {args.repeat} interleaved run(s)")
    names = list(runs[next(iter(runs))][0][2])
    print("| kernels | wall s | CPU s | " + " | ".join(names) + " |")
    print("|---" * (3 + len(names)) + "|")
    for k, v in runs.items():
        ops = [statistics.median(r[2].get(n, 0.0) for r in v) for n in names]
        print(f"| {k} | {statistics.median(r[0] for r in v):.1f} | {statistics.median(r[1] for r in v):.1f} | "
              + " | ".join(f"{x:.2f}" for x in ops) + " |")


_OPS_CHILD = """
import json, sys, time, warnings
import pyarrow.json as pj
from thresher.api import apply_op
from thresher.pipeline.recipe import load_recipe
warnings.simplefilter("ignore")
table = pj.read_json(sys.argv[1]).select(["id", "text"])
recipe = load_recipe("fineweb", inputs=[sys.argv[1]])
out = {}
for spec in recipe.ops:
    if spec.name in ("html_extract", "exact_dedup", "pii_redact"):  # no numba kernel
        continue
    params = spec.params.model_dump()
    apply_op(spec.name, table.slice(0, 50), params=params)  # loads the kernels, the model
    t = time.process_time()
    apply_op(spec.name, table, params=params)
    out[spec.name] = time.process_time() - t
print(json.dumps(out))
"""


def code_ops(args) -> None:
    """Per op: CPU seconds of ``apply_op`` on ``--code-ops`` documents, one process per run, with
    kernels compiled here vs loaded from the shipped bundle (generic x86-64), interleaved."""
    import subprocess

    corpus = make_corpus(args.code_ops, args.work / f"corpus_{args.code_ops}.jsonl")
    small = make_corpus(200, args.work / "corpus_200.jsonl")
    out = args.work / "out-code-ops"
    caches = {"host-compiled": ({"THRESHER_SHIPPED_KERNELS": "0"}, Path(tempfile.mkdtemp(prefix="numba-host-", dir=args.work))),
              "shipped (generic)": ({}, Path(tempfile.mkdtemp(prefix="numba-shipped-", dir=args.work)))}
    for env, cache in caches.values():
        _thresher("fineweb", out, cache, small, 1, **env)
    load0 = os.getloadavg()[0]
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in caches}
    for i in range(args.repeat):
        for name in (list(caches) if i % 2 == 0 else list(caches)[::-1]):
            env = {**os.environ, "NUMBA_CACHE_DIR": str(caches[name][1]), "THRESHER_SHIPPED_KERNELS": "0"}
            res = subprocess.run([sys.executable, "-c", _OPS_CHILD, str(corpus)], env=env, capture_output=True,
                                 text=True, check=True)
            runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
    for _, cache in caches.values():
        shutil.rmtree(cache, ignore_errors=True)
    names = list(runs["host-compiled"][0])
    med = {k: {n: statistics.median(r[n] for r in v) for n in names} for k, v in runs.items()}
    print(f"\nper op, CPU s of apply_op on {args.code_ops:,} docs in one process; load average {load0:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; median of {args.repeat} interleaved run(s); {time.strftime('%Y-%m-%d %H:%M')}")
    print("| op | host-compiled | shipped (generic) | ratio |")
    print("|---|---|---|---|")
    for n in [*names, "total"]:
        h = sum(med["host-compiled"].values()) if n == "total" else med["host-compiled"][n]
        g = sum(med["shipped (generic)"].values()) if n == "total" else med["shipped (generic)"][n]
        print(f"| {n} | {h:.2f} | {g:.2f} | {g / h:.3f} |")


if __name__ == "__main__":
    main()
