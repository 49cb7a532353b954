"""Where thresher's memory goes, against datatrove's (issue 19 item 1), in one invocation.

    python bench/memory.py                          # breakdown + exact, heuristic, MinHash at 100k
    python bench/memory.py --parts exact --n 20000  # one part, smaller
    python bench/memory.py --skip-peers             # thresher only
    python bench/memory.py --parts exact --skip-peers --block_mb 16,8,4   # block sizes, interleaved
    python bench/memory.py --skip-peers --pool spawn,forkserver --rounds 2  # how workers start, interleaved
    python bench/memory.py --skip-peers --rounds 2 --baseline /tmp/ref     # against a frozen copy, interleaved
    python bench/memory.py --skip-peers --env "in driver:THRESHER_RESOLVE=driver"   # this tree with other env

1. Breakdown: the USS and PSS of one fresh process after each import step a worker takes
   (interpreter; pyarrow; polars; numba; the engine; every built-in operator through the registry).
2. Per part (exact dedup, the peers' Gopher heuristic set, MinHash 14x8), thresher (2 workers) and
   datatrove (``../shared/tools/peers/dt_pipelines.py``, 2 workers, the throwaway venv of
   bench/filters.py): wall, CPU s and peak PSS of the process tree, and at thresher's peak the
   PSS / USS of each of its processes (driver, fork server, resource tracker, workers, the child a
   resolve runs in; "child": forked from the driver, a worker of a pool forked from it or a resolve).
   A sample counts only if no process of the tree started or ended while it was read.
   ``--pool spawn,forkserver`` runs thresher with each way of starting the pool's workers
   (``THRESHER_POOL``, pipeline/executors/local.py), interleaved within each round. ``--baseline DIR``
   also runs a frozen copy of the code (a folder made by ``bench/recipe_time.py --freeze``:
   ``PYTHONPATH=DIR/boot:DIR/src``) after each run of the working tree's, and says whether each run's
   output files are byte-identical to the first run's of its part; ``--env "NAME:KEY=VALUE,..."``
   (repeatable) runs this tree again with those environment variables, interleaved too.

CPU seconds are those of every process of the tree, the orphans included: this process is made the
tree's child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so a fork server that outlives its driver
(thresher's or datatrove's) is reparented here and waited for, with the workers it waited for.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import SHARED, corpus_args  # noqa: E402
from exact_dedup import datatrove_python, reap, split_shards, subreaper  # noqa: E402
from filters import PEER_HEURISTIC  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEERS = SHARED / "tools" / "peers"
STEPS = [("interpreter", "pass"), ("+ pyarrow (compute, json, parquet)", "import pyarrow.compute, pyarrow.json, pyarrow.parquet"),
         ("+ polars", "import polars"), ("+ numba", "import numba"),
         ("+ engine (executors.passes)", "import thresher.pipeline.executors.passes"),
         ("+ every built-in op (registry)", "from thresher.pipeline.registry import load_all; load_all()")]
PARTS = {"exact": [{"exact_dedup": {}}], "heuristic": PEER_HEURISTIC,
         "minhash": [{"minhash_dedup": {"threshold": 0.8, "num_perm": 112, "bands": 14, "rows": 8, "ngram": 5}}]}


def import_breakdown() -> list[tuple[str, float, float]]:
    code = ("import json, psutil\nout = []\n" + "".join(
        f"{stmt}\nm = psutil.Process().memory_full_info(); out.append(({label!r}, m.uss, m.pss))\n"
        for label, stmt in STEPS) + "print(json.dumps(out))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return [(label, uss / 2**20, pss / 2**20) for label, uss, pss in json.loads(res.stdout)]


def _role(q: psutil.Process, root: int, server: set[int]) -> str:
    cmd = " ".join(q.cmdline())
    if q.pid == root:
        return "driver"
    if "forkserver import main" in cmd and q.ppid() not in server:
        server.add(q.pid)
        return "forkserver"
    if "resource_tracker" in cmd:
        return "tracker"
    if q.ppid() == root and "multiprocessing" not in cmd:
        # forked from the driver (its command line): a pool's worker, or the child a resolve runs in
        return "child"
    return "worker"


def run_tree(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[float, float, int, list[tuple[str, int, int]]]:
    """(wall s, CPU s, peak PSS of the tree, [(process, PSS, USS)] at the peak)."""
    subreaper()  # orphans of the measured tree come to this process, which waits for them (reap)
    before = os.times()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, cwd=cwd)
    ps = psutil.Process(p.pid)
    best: list = [0, []]
    stop = threading.Event()
    server: set[int] = set()

    def sample():
        while not stop.is_set():
            snap = []
            with contextlib.suppress(psutil.NoSuchProcess):
                procs = [ps, *ps.children(recursive=True)]
                for q in procs:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        m = q.memory_full_info()
                        snap.append((_role(q, p.pid, server), m.pss, m.uss))
                # A process that started or ended while the others were read moved pages between
                # the sharers' PSS already read and those not yet read: the sum would count them
                # twice (or not at all). Only a sample whose processes were the same throughout counts.
                if len(snap) != len(procs) or {q.pid for q in ps.children(recursive=True)} != {q.pid for q in procs[1:]}:
                    snap = []
            total = sum(m for _, m, _ in snap)
            if total > best[0]:
                best[:] = [total, snap]
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = p.wait()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    reap()  # the orphans (a fork server, a resource tracker) exit once the driver has
    after = os.times()
    if rc:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu, best[0], best[1]


def thresher_cmd(work: Path, corpus: Path, part: str, workers: int, block_mb: float | None = None) -> list[str]:
    import yaml

    out = work / f"out-memory-{part}"
    shutil.rmtree(out, ignore_errors=True)
    recipe = work / f"recipe-memory-{part}.yaml"
    executor = {"type": "local", "workers": workers, **({"batch_size_mb": block_mb} if block_mb else {})}
    recipe.write_text(yaml.safe_dump({"input": {"paths": [str(corpus)]},
                                      "output": {"path": str(out), "rows_per_shard": 1_000_000, "trace_samples": 0},
                                      "executor": executor, "process": PARTS[part]}))
    return [sys.executable, "-m", "thresher", "run", str(recipe), "-q"]


def output_digest(work: Path, part: str) -> str:
    """sha256 over the data files of a part's output (names and bytes, in name order)."""
    h = hashlib.sha256()
    for f in sorted((work / f"out-memory-{part}" / "data").iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="this tree's thresher again, with these environment variables")
    args, work, corpus = corpus_args(ap, parts=(str, "exact,heuristic,minhash"), block_mb=(str, ""), rounds=(int, 1),
                                     pool=(str, ""), baseline=(Path, None))
    W = args.workers

    print("one process, after each import step: USS MB / PSS MB")
    for label, uss, pss in import_breakdown():
        print(f"  {label}: {uss:.0f} / {pss:.0f}")
    rows = []
    blocks = [float(b) for b in args.block_mb.split(",") if b] or [None]
    pools = [p for p in args.pool.split(",") if p] or [""]
    variants = [(f" ({pool})" if pool else "", {"PYTHONPATH": str(ROOT), **({"THRESHER_POOL": pool} if pool else {})})
                for pool in pools]
    for spec in args.env:
        name, _, pairs = spec.partition(":")
        variants.append((f" ({name})", {"PYTHONPATH": str(ROOT), **dict(kv.split("=", 1) for kv in pairs.split(",") if kv)}))
    if args.baseline:
        variants.append((f" baseline {args.baseline.name}",
                         {"PYTHONPATH": f"{args.baseline / 'boot'}:{args.baseline / 'src'}"}))
    for part in args.parts.split(","):
        first = None
        for _ in range(args.rounds):  # block sizes, pools and the baseline interleaved within each round
            for block in blocks:
                for label, env in variants:
                    tool = "thresher" + (f" ({block:g} MB blocks)" if block else "") + label
                    # from the work folder: the checkout first on sys.path would hide a baseline's code
                    wall, cpu, peak, procs = run_tree(thresher_cmd(work, corpus, part, W, block), env=env, cwd=work)
                    rows.append((part, tool, wall, cpu, peak))
                    digest = output_digest(work, part)
                    first = first or digest
                    print(f"{tool} {part}: {wall:.1f} s, {cpu:.1f} CPU s, output {digest[:12]}"
                          f"{'' if digest == first else ' (DIFFERS from the first run)'}; at the peak, PSS / USS MB: "
                          + "; ".join(f"{r} {m / 2**20:.0f} / {u / 2**20:.0f}" for r, m, u in sorted(procs)), flush=True)
        if not args.skip_peers:
            shards = split_shards(corpus, work / f"shards_exact_{args.n}_{W}", W)
            cmd = [str(datatrove_python(work)), str(PEERS / "dt_pipelines.py"), "--part", part, "--input", str(shards),
                   "--out", str(work / f"out-dt-memory-{part}"), "--workers", str(W)]
            wall, cpu, peak, _ = run_tree(cmd)
            rows.append((part, "datatrove", wall, cpu, peak))
    print(f"\n{args.n:,} docs, {W} workers; machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{time.strftime('%Y-%m-%d')}")
    print("| part | tool | wall s | CPU s | peak PSS MB | PSS / datatrove |\n|---|---|---|---|---|---|")
    peer = {p: pk for p, tool, _, _, pk in rows if tool == "datatrove"}
    for part, tool, wall, cpu, peak in rows:
        rel = f"{peak / peer[part]:.2f}x" if part in peer else ""
        print(f"| {part} | {tool} | {wall:.1f} | {cpu:.1f} | {peak / 2**20:,.0f} | {rel} |")


if __name__ == "__main__":
    main()
