"""Ray vs local on the same machine: the shipped `fineweb` recipe (HTML extraction, language ID in
tasks — in model actors with ``--model-actors`` —, Gopher/C4/FineWeb rules, exact and MinHash dedup
— resolved by two-stage task shuffles on Ray —, PII) on ~1 GB of real paragraphs, wall time and peak RSS (whole process tree).

    python bench/ray_vs_local.py               # ~1 GB corpus (480k docs)
    python bench/ray_vs_local.py --n 100000 --repeat 3

    python bench/ray_vs_local.py --corpus /tmp/corpus20k.jsonl --workers 2 --repeat 3 --shard-mb 8 \
        --baseline-tree /tmp/frozen/pkg          # also Ray from a frozen copy of the package
    python bench/ray_vs_local.py --corpus /tmp/corpus_100000.jsonl --workers 2 --repeat 2 --ray-full \
        --baseline-path /tmp/ref/boot:/tmp/ref/src   # Ray with all its processes, and a frozen copy

A frozen package: ``mkdir -p /tmp/frozen/pkg && cp -r thresher /tmp/frozen/pkg/`` and then each of
``capacity cluster operators pipeline recipes`` into ``/tmp/frozen/pkg/thresher/`` (the editable
install maps them there); its runs start with that directory as their working directory, which
``python -m`` puts first on ``sys.path``.

Target (issue 19): Ray within 1.1x of local wall time on 2 cores, peak PSS within 1.5x. Small shared
machines drift by 10-20% between runs of the same job, so runs are interleaved (local, ray, local,
ray, ...) and the median of ``--repeat`` runs is reported, with the ledger's per-pass times
(start-up, each pass, each global op's resolve) that say where any difference goes. Memory is the
peak of the process tree's summed PSS (Ray's daemons, workers and shared object store counted once),
sampled every 0.25 s, with what each kind of process held at that peak (``--breakdown``); CPU is
the tree's user+system seconds, summed over every process seen (a process that ends between two
samples loses at most its last 0.25 s).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import make_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROCESS = yaml.safe_load((ROOT / "recipes" / "fineweb.yaml").read_text())["process"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=480_000)
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved runs of each configuration (median reported)")
    ap.add_argument("--model-tasks", action="store_true", help="also run Ray with model ops in tasks (model_actors: false)")
    ap.add_argument("--model-actors", action="store_true", help="also run Ray with model ops in actors (model_actors: true; "
                    "a local Ray otherwise runs them in tasks)")
    ap.add_argument("--shard-mb", type=int, default=32, help="input shard size (more workers need more shards)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    ap.add_argument("--baseline-tree", type=Path, help="a directory holding a frozen `thresher` package: also run "
                    "Ray from it (executor 'ray-base'), interleaved with the others")
    ap.add_argument("--baseline-path", help="instead of --baseline-tree: the PYTHONPATH of a frozen copy (e.g. "
                    "/tmp/ref/boot:/tmp/ref/src, a copy whose boot/sitecustomize.py hides the editable install)")
    ap.add_argument("--ray-full", action="store_true", help="also run Ray with every process Ray starts "
                    "(THRESHER_RAY_LEAN=0: its autoscaler monitor, API server and log monitor; executor 'ray-full')")
    ap.add_argument("--breakdown", action="store_true", help="print what each kind of process held at each run's peak")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or make_corpus(args.n, args.work / f"corpus_{args.n}.jsonl")
    runs: dict[tuple[str, int], list[tuple[float, int, str, dict]]] = {}
    kinds = (["local", "ray"] + ["ray-tasks"] * args.model_tasks + ["ray-actors"] * args.model_actors
             + ["ray-full"] * args.ray_full + ["ray-base"] * bool(args.baseline_tree or args.baseline_path))
    configs = [(e, int(w)) for w in args.workers.split(",") for e in kinds]
    for _ in range(args.repeat):
        for executor, workers in configs:
            r = _run_once(args.work, corpus, executor, workers, args.shard_mb, args.baseline_tree, args.baseline_path)
            runs.setdefault((executor, workers), []).append(r)
            print(f"{executor} {workers}: {r[0]:.1f} s, {r[4]:.1f} CPU-s, {r[1] / 2**20:,.0f} MB, {r[2][:12]}", flush=True)
            if args.breakdown:
                print("    MB at peak: " + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in r[5].most_common()), flush=True)
                print("    CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in r[6].most_common()), flush=True)
                spill = sorted(k for k in r[6] if "SpillWorker" in k or "RestoreWorker" in k)
                print(f"    object spilling: {', '.join(spill) if spill else 'no spill or restore worker started'}",
                      flush=True)
    print(f"\ncorpus: {corpus} ({corpus.stat().st_size / 1e9:.2f} GB); machine: {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}; median of {args.repeat} interleaved run(s)")
    print("| executor | workers | wall s (runs) | CPU s | peak PSS MB | Ray / local | start s | passes s (resolve s) | output sha256 |")
    print("|---|---|---|---|---|---|---|---|---|")
    local = {w: statistics.median(r[0] for r in rs) for (e, w), rs in runs.items() if e == "local"}
    for (e, w), rs in runs.items():
        wall = statistics.median(r[0] for r in rs)
        mid = min(rs, key=lambda r: abs(r[0] - wall))  # the run nearest the median, for its breakdown
        digests = {r[2][:12] for r in rs}
        ratio = f"{wall / local[w]:.2f}x" if e != "local" else ""
        walls = ", ".join(f"{r[0]:.0f}" for r in rs)
        passes = " / ".join(f"{p['seconds']:.0f}" + (f" ({p['resolve_seconds']:.0f})" if "resolve_seconds" in p else "")
                            for p in mid[3]["passes"])
        cpu = statistics.median(r[4] for r in rs)
        print(f"| {e} | {w} | {wall:.1f} ({walls}) | {cpu:.0f} | {max(r[1] for r in rs) / 2**20:,.0f} | {ratio} | "
              f"{mid[3]['start_seconds']:.1f} | {passes} | {', '.join(sorted(digests))} |")


def _run_once(work: Path, corpus: Path, executor: str, workers: int, shard_mb: int = 32,
              baseline: Path | None = None, baseline_path: str | None = None) -> tuple:
    """One run: wall seconds, peak PSS bytes, output digest, the ledger's timings, CPU seconds, and
    the PSS by kind of process at the peak. 'ray-base' runs the frozen copy: ``baseline_path`` as
    PYTHONPATH (from this tree's parent, so ``-m`` finds nothing here), else the ``baseline`` tree."""
    out = work / f"out-{executor}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    recipe = work / f"recipe-{executor}-{workers}.yaml"
    spec = {"type": "local" if executor == "local" else "ray", "workers": workers}
    if executor in ("ray-tasks", "ray-actors"):
        spec["model_actors"] = executor == "ray-actors"
    tree = baseline if executor == "ray-base" and baseline else ROOT
    path = str(tree)
    if executor == "ray-base" and baseline_path:
        tree, path = work, baseline_path
    recipe.write_text(yaml.safe_dump({
        "input": {"paths": [str(corpus)], "shard_size_mb": shard_mb},
        "output": {"path": str(out), "rows_per_shard": 1_000_000, "trace_samples": 0},
        "executor": spec, "seed": 42, "process": PROCESS}))
    wall, pss, cpu, kinds, cpu_kinds = _sampled([sys.executable, "-m", "thresher", "run", str(recipe), "-q"],
                                     {"PYTHONPATH": os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")])),
                                      "RAY_USAGE_STATS_ENABLED": "0", "THRESHER_RAY_LEAN": "0" if executor == "ray-full" else "1"},
                                     tree)  # `-m` puts the cwd first on sys.path
    timings = json.loads((out / "ledger.json").read_text())["run"]["timings"]
    digest = _row_stream_digest(out)
    shutil.rmtree(out, ignore_errors=True)
    return wall, pss, digest, timings, cpu, kinds, cpu_kinds


_KINDS = ("gcs_server", "raylet", "dashboard.py", "dashboard/agent.py", "runtime_env/agent", "log_monitor", "monitor.py",
          "ray_watchdog", "thresher run")


def _kind(p: psutil.Process) -> str:
    """A short name for what a process of the tree is (Ray's workers by their proctitle)."""
    argv = p.cmdline()
    cmd = " ".join(argv)
    if argv and os.path.basename(argv[0]) in ("raylet", "gcs_server"):  # the raylet's arguments name its workers' and agents' scripts
        return os.path.basename(argv[0])
    if cmd.startswith("ray::"):
        return cmd.split()[0]
    if "default_worker.py" in cmd:  # a Ray worker before it names itself
        return "ray::IDLE"
    return next((k for k in _KINDS if k in cmd), "worker" if "-c from multiprocessing" in cmd else cmd[:30])


def _sampled(cmd: list[str], env: dict, cwd: Path, interval: float = 0.25) -> tuple:
    """Wall seconds, peak summed PSS of the process tree, CPU seconds of every process seen, the PSS
    by ``_kind`` at the peak, and the CPU seconds by kind (a Ray worker by the first work it did).
    The sampler runs here, between samples it sleeps."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, cwd=cwd)
    root = psutil.Process(proc.pid)
    peak, at_peak, cpu, kind_of = 0, collections.Counter(), {}, {}
    while proc.poll() is None:
        total, kinds = 0, collections.Counter()
        with contextlib.suppress(psutil.NoSuchProcess):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    pss = p.memory_full_info().pss
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                    kind_of[p.pid] = kind_of.get(p.pid) if kind_of.get(p.pid, "ray::IDLE") != "ray::IDLE" else _kind(p)
                    total += pss
                    kinds[_kind(p)] += pss
        if total > peak:
            peak, at_peak = total, kinds
        time.sleep(interval)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    by_kind = collections.Counter()
    for pid, seconds in cpu.items():
        by_kind[kind_of[pid]] += seconds
    return wall, peak, sum(cpu.values()), at_peak, by_kind


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
