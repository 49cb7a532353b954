"""The whole shipped `fineweb` recipe, local executor, wall / CPU / per-op seconds (issue 19 item 5).

    python bench/recipe_time.py                                    # working tree, 100k corpus, 3 runs
    python bench/recipe_time.py --freeze /tmp/ref --rev HEAD      # once: a frozen copy of a revision
    python bench/recipe_time.py --baseline /tmp/ref --runs 3      # interleaved with the frozen copy

Runs ``thresher run fineweb --input CORPUS --output OUT -q`` (2 workers, the recipe's own settings)
``--runs`` times, each variant once per round (baseline first, then the working tree), after one
untimed warm-up run per variant (numba's kernel cache, the page cache). Per run: wall seconds, the
CPU seconds (user and system) of the whole process tree (``RUSAGE_CHILDREN`` of this process: the
CLI and every pool worker it waited for), the run's timings from ``ledger.json``
(``ledger['run']['timings']``: passes, resolve steps) and each op's seconds
(``ledger['ops'][name]['seconds']``); prints the medians and, with a baseline, the ratios. Every run
must balance (``ledger['balanced']``) and, with a baseline, both variants must write the same
output files (checked byte for byte on the last round). The machine's load (``os.getloadavg``) is
printed before and after: on a shared machine compare ratios within one invocation, not across.

``--freeze DIR --rev REV`` writes ``git archive REV`` under DIR/src (thresher/__init__.py finds the
other top-level folders beside it) and DIR/boot/sitecustomize.py, which drops the editable install's
import hook (``site`` runs sitecustomize after the .pth files that install it); ``--baseline DIR``
runs with ``PYTHONPATH=DIR/boot:DIR/src``, in the CLI and in every worker it starts (from a working
folder outside the checkout, so that the checkout is not first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOT = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", repr(f)).lower()]
"""


def freeze(dest: Path, rev: str) -> None:
    """``git archive rev`` under dest/src (read-only on the repository) and dest/boot/sitecustomize.py."""
    src, boot = dest / "src", dest / "boot"
    if src.exists():
        raise SystemExit(f"{src} exists: pick a fresh folder")
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    boot.mkdir(parents=True)
    (boot / "sitecustomize.py").write_text(BOOT)
    print(f"frozen {rev} in {dest} (run with --baseline {dest})")


def run_once(corpus: Path, out: Path, env: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "thresher", "run", "fineweb", "--input", str(corpus), "--output", str(out),
                    "-q"], check=True, env=env, stdout=subprocess.DEVNULL, cwd=out.parent)  # not the checkout
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ledger = json.loads((out / "ledger.json").read_text())
    if not ledger.get("balanced", False):
        raise SystemExit(f"run in {out} does not balance")
    timings = ledger["run"]["timings"]
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "ops": {k: v.get("seconds", 0.0) for k, v in ledger["ops"].items()},
            "passes": [p["seconds"] for p in timings.get("passes", [])],
            "resolve": sum(p.get("resolve_seconds", 0.0) for p in timings.get("passes", []))}


def same_output(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and "_work" not in p.parts
                   and p.suffix in {".jsonl", ".parquet", ".gz", ".zst"})
    other = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and "_work" not in p.parts
                   and p.suffix in {".jsonl", ".parquet", ".gz", ".zst"})
    return names == other and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/tmp/corpus_100000.jsonl"))
    ap.add_argument("--runs", type=int, default=3, help="timed runs per variant (median)")
    ap.add_argument("--baseline", type=Path, help="a folder made by --freeze: run it interleaved")
    ap.add_argument("--freeze", type=Path, help="make a frozen copy of --rev in this folder and exit")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--work", type=Path, default=Path("/tmp") / f"recipe-time-{os.getuid()}")
    ap.add_argument("--no-warmup", action="store_true")
    args = ap.parse_args()
    if args.freeze:
        freeze(args.freeze, args.rev)
        return
    variants = {}
    if args.baseline:
        variants["baseline"] = {**os.environ, "PYTHONPATH": f"{args.baseline / 'boot'}:{args.baseline / 'src'}"}
    variants["working tree"] = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    print(f"corpus {args.corpus}, load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.no_warmup:
        for name, env in variants.items():
            run_once(args.corpus, args.work / name.replace(" ", "_"), env)
    results: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(args.runs):
        for name, env in variants.items():
            res = run_once(args.corpus, args.work / name.replace(" ", "_"), env)
            results[name].append(res)
            print(f"round {r + 1} {name}: wall {res['wall']:.1f} s, user {res['user']:.1f} s, sys {res['sys']:.1f} s",
                  flush=True)
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    med = {name: {"wall": statistics.median(x["wall"] for x in rs), "user": statistics.median(x["user"] for x in rs),
                  "sys": statistics.median(x["sys"] for x in rs),
                  "passes": [statistics.median(p) for p in zip(*(x["passes"] for x in rs), strict=False)],
                  "resolve": statistics.median(x["resolve"] for x in rs),
                  "ops": {op: statistics.median(x["ops"].get(op, 0.0) for x in rs) for op in rs[0]["ops"]}}
           for name, rs in results.items()}
    names = list(med)
    print(f"\nmedian of {args.runs} (fineweb recipe, local, 2 workers)\n| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for key in ("wall", "user", "sys"):
        print(f"| {key} s | " + " | ".join(f"{med[n][key]:.1f}" for n in names) + " |")
    print("| passes s | " + " | ".join(" + ".join(f"{p:.1f}" for p in med[n]["passes"]) for n in names) + " |")
    print("| resolve s | " + " | ".join(f"{med[n]['resolve']:.1f}" for n in names) + " |")
    for op in med[names[-1]]["ops"]:
        print(f"| {op} | " + " | ".join(f"{med[n]['ops'].get(op, 0.0):.1f}" for n in names) + " |")
    print("| op-seconds total | " + " | ".join(f"{sum(med[n]['ops'].values()):.1f}" for n in names) + " |")
    if args.baseline:
        b, w = med["baseline"], med["working tree"]
        print(f"\nworking tree / baseline: wall {w['wall'] / b['wall']:.2f}x, "
              f"CPU {(w['user'] + w['sys']) / (b['user'] + b['sys']):.2f}x")
        same = same_output(args.work / "baseline", args.work / "working_tree")
        print(f"same output files: {same}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
