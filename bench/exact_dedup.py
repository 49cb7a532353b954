"""Exact dedup against the IO floor and datatrove (issue 19 item 2), in one invocation.

    python bench/exact_dedup.py                      # 100k docs: floor, thresher, datatrove
    python bench/exact_dedup.py --n 1000000 --work W # 1M docs (W/corpus_1000000.jsonl: ten make_corpus.py
                                                     # --n 100000 --seed K files, ids prefixed, concatenated;
                                                     # one --n 1000000 run holds all 1M docs in memory, ~4 GB)
    python bench/exact_dedup.py --skip-peers         # floor and thresher only
    python bench/exact_dedup.py --baseline /tmp/ref  # also a frozen copy (bench/recipe_time.py --freeze)

Three commands on the same JSONL corpus (``bench/_measure.py: make_corpus``; ``--work DIR`` with a
``DIR/corpus_N.jsonl`` already there uses that file), each in its own process tree, wall time, CPU
seconds of the tree and peak PSS of the tree (sampled every 50 ms). CPU seconds count every process of
the tree, those forked by a fork server (thresher's pool, datatrove's workers) among them: this process
is their "child subreaper" (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``), so a process orphaned when its
parent exits unwaited comes to it and is waited for, and its CPU time (with its children's) is counted.

- floor: ``pyarrow.json.read_json`` of the file + polars ``write_ndjson`` (bench/io_floor.py);
- thresher: a recipe with ``exact_dedup: {}`` (NFKC, lower-case, whitespace folded; 2 workers);
- datatrove: ``../shared/tools/peers/dt_pipelines.py --part exact`` (xxhash64 of the raw text,
  three stages, 2 workers), in the throwaway venv ``bench/filters.py`` creates (made here if absent).

``--rounds`` runs the three commands that many times interleaved and reports the medians: on a
shared machine the ratios of one round move with the load. ``--baseline DIR`` (a folder made by
``bench/recipe_time.py --freeze``) adds the frozen copy's thresher as a fourth command, run with
``PYTHONPATH=DIR/boot:DIR/src`` from the work folder, and checks that both write the same rows
(the data files concatenated in name order; and whether the files themselves are the same: a change
of the shard plan moves rows between files). ``--env NAME:KEY=VALUE,...`` (repeatable) adds this
tree's thresher again with those environment variables (the workers' allocator settings, e.g.
``--env trim64:MALLOC_TRIM_THRESHOLD_=67108864``); its output is checked the same way. The table
gives CPU seconds and, of them, system seconds (page faults, mappings).
"""

from __future__ import annotations

import argparse
import filecmp
import itertools
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import SHARED, corpus_args, run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEERS = SHARED / "tools" / "peers"
PLAIN_JSONL = """
import sys, pyarrow.json as pj, polars as pl
t = pj.read_json(sys.argv[1])
with open(sys.argv[2], "wb") as f:
    pl.from_arrow(t).write_ndjson(f)
"""
RECIPE = """
input: {{paths: ["{inp}"]}}
output: {{path: "{out}", rows_per_shard: 1000000, trace_samples: 0}}
executor: {{type: local, workers: {workers}}}
process:
  - exact_dedup: {{}}
"""


def subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux); False where that fails."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap(timeout: float = 60.0) -> None:
    """Wait for every process re-parented to this one (a fork server outlives its driver briefly)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            time.sleep(0.05)


def measured(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> tuple[float, int, float, float]:
    """(wall s, peak PSS bytes, CPU s of the whole tree, of which system s)."""
    before = os.times()
    wall, pss = run_measured(cmd, env=env, metric="pss", cwd=cwd)
    reap()
    after = os.times()
    sys_s = after.children_system - before.children_system
    return wall, pss, (after.children_user - before.children_user) + sys_s, sys_s


def env_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``NAME:KEY=VALUE,KEY=VALUE`` -> (NAME, {KEY: VALUE})."""
    name, _, pairs = spec.partition(":")
    return name, dict(kv.split("=", 1) for kv in pairs.split(",") if kv)


def same_output(a_dir: Path, b_dir: Path) -> tuple[bool, bool]:
    """(the same rows: the data files' bytes concatenated in name order; the same files)."""
    a, b = sorted((a_dir / "data").iterdir()), sorted((b_dir / "data").iterdir())
    files = [x.name for x in a] == [y.name for y in b] and all(filecmp.cmp(x, y, shallow=False)
                                                               for x, y in zip(a, b, strict=True))
    return files or _stream_digest(a) == _stream_digest(b), files


def _stream_digest(files: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def split_shards(src: Path, out_dir: Path, n: int) -> Path:
    """The corpus in ``n`` files of consecutive lines (datatrove splits work by file), made once,
    streaming (a 1M-document corpus is 2 GB)."""
    if (out_dir / ".done").exists():
        return out_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    with open(src, "rb") as f:
        total = sum(1 for _ in f)
    per = (total + n - 1) // n
    with open(src, "rb") as f:
        for i in range(n):
            with open(out_dir / f"shard-{i}.jsonl", "wb") as out:
                out.writelines(itertools.islice(f, per))
    (out_dir / ".done").write_text("ok")
    return out_dir


def datatrove_python(work: Path) -> Path:
    from filters import ensure_venv

    return ensure_venv(work, "dt", ["datatrove[processing]"], PEERS / "overlay_dt_requirements.txt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="this tree's thresher again, with these environment variables")
    args, work, corpus = corpus_args(ap, rounds=(int, 1), baseline=(Path, None))
    W = args.workers
    py = sys.executable
    cases: dict[str, list[str]] = {"plain pyarrow read + polars write (floor)": [py, "-c", PLAIN_JSONL, str(corpus),
                                                                               str(work / "out-plain-exact.jsonl")]}
    out = work / "out-exact-thresher"
    recipe = work / "recipe-exact-dedup.yaml"
    recipe.write_text(RECIPE.format(inp=corpus, out=out, workers=W))
    cases[f"thresher exact_dedup ({W} workers)"] = [py, "-m", "thresher", "run", str(recipe), "-q"]
    envs = {name: {"PYTHONPATH": str(ROOT)} for name in cases}
    outs = {}  # thresher case -> its output folder
    for name in cases:
        if name.startswith("thresher"):
            outs[name] = out
    for spec in args.env:
        label, extra = env_variant(spec)
        v_out = work / f"out-exact-env-{label}"
        v_recipe = work / f"recipe-exact-dedup-env-{label}.yaml"
        v_recipe.write_text(RECIPE.format(inp=corpus, out=v_out, workers=W))
        name = f"thresher exact_dedup, {label} ({W} workers; {spec.partition(':')[2]})"
        cases[name] = [py, "-m", "thresher", "run", str(v_recipe), "-q"]
        envs[name] = {"PYTHONPATH": str(ROOT), **extra}
        outs[name] = v_out
    base_out = work / "out-exact-baseline"
    if args.baseline:
        base_recipe = work / "recipe-exact-dedup-baseline.yaml"
        base_recipe.write_text(RECIPE.format(inp=corpus, out=base_out, workers=W))
        name = f"thresher exact_dedup, baseline {args.baseline.name} ({W} workers)"
        cases[name] = [py, "-m", "thresher", "run", str(base_recipe), "-q"]
        envs[name] = {"PYTHONPATH": f"{args.baseline / 'boot'}:{args.baseline / 'src'}"}
        outs[name] = base_out
    if not args.skip_peers:
        shards = split_shards(corpus, work / f"shards_exact_{args.n}_{W}", W)
        name = f"datatrove exact dedup ({W} workers)"
        cases[name] = [str(datatrove_python(work)), str(PEERS / "dt_pipelines.py"), "--part", "exact",
                       "--input", str(shards), "--out", str(work / "out-dt-exact"), "--workers", str(W)]
        envs[name] = {"PYTHONPATH": str(ROOT)}
    counted = subreaper()
    results: dict[str, list[tuple[float, int, float, float]]] = {k: [] for k in cases}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, cmd in cases.items():
            if name in outs:
                shutil.rmtree(outs[name], ignore_errors=True)
            results[name].append(measured(cmd, env=envs[name], cwd=str(work)))
    for name, o in outs.items():
        if o != out:
            rows, files = same_output(out, o)
            print(f"output of '{name}': rows byte-identical: {rows}; files byte-identical: {files}")
            shutil.rmtree(o, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    (work / "out-plain-exact.jsonl").unlink(missing_ok=True)

    med = {k: tuple(statistics.median(r[i] for r in v) for i in range(4)) for k, v in results.items()}
    floor = next(iter(med.values()))
    dt = next((v for k, v in med.items() if k.startswith("datatrove")), None)
    print(f"\n{args.n:,} docs ({corpus.stat().st_size / 1e6:.0f} MB JSONL); machine: {os.cpu_count()} cores, "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}; {args.rounds} round(s), medians; {time.strftime('%Y-%m-%d')}")
    if not counted:
        print("(not Linux: CPU seconds miss the processes a fork server started)")
    print("| command | wall s | CPU s | of which sys s | peak PSS MB | wall / floor | CPU / floor | PSS / datatrove |\n"
          "|---|---|---|---|---|---|---|---|")
    for name, (wall, pss, cpu, sys_s) in med.items():
        rel = f"{pss / dt[1]:.2f}x" if dt else ""
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {sys_s:.2f} | {pss / 2**20:,.0f} | {wall / floor[0]:.2f}x | "
              f"{cpu / floor[2]:.2f}x | {rel} |")


if __name__ == "__main__":
    main()
