"""Heuristic filters: thresher vs datatrove vs Data-Juicer on a corpus built from real paragraphs.

    python bench/filters.py                    # 100k docs for thresher; peers on a 20k-doc subset
    python bench/filters.py --peer-n 5000      # quicker peers
    python bench/filters.py --skip-peers       # thresher only

The heuristic part of the `fineweb` recipe (Gopher repetition, Gopher quality, C4 without the
terminal-punctuation rule, FineWeb) runs in thresher and, with the same rules and defaults, in
datatrove; Data-Juicer runs its nearest filters (../shared/tools/peers/dj_heuristic.yaml, which
stands in for the Gopher rules). A second, smaller recipe (the peers' "heuristic" set: Gopher
R1-R6) runs in all three. Peers are installed by this script into throwaway venvs under --work,
never into the project's environment. Throughput is docs/s per core (docs / wall s / workers);
memory is the peak RSS of the whole process tree. Decisions are compared with datatrove's on the
subset, document by document, with the disagreements tabulated by (thresher reason, datatrove reason).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import SHARED, corpus_args, run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEERS = SHARED / "tools" / "peers"

FINEWEB_HEURISTIC = [
    {"gopher_repetition_filter": {}},
    {"gopher_quality_filter": {}},
    {"c4_line_filter": {"filter_no_terminal_punct": False}},
    {"c4_quality_filter": {}},
    {"fineweb_quality_filter": {}},
]
# the peers' "heuristic" set: Gopher R1-R5 quality rules and the duplicate-line rule (R6)
PEER_HEURISTIC = [
    {"gopher_repetition_filter": {"dup_line_frac": 0.3, "dup_para_frac": None, "dup_line_char_frac": None,
                                  "dup_para_char_frac": None, "top_n_grams": {}, "dup_n_grams": {}}},
    {"gopher_quality_filter": {"max_bullet_lines_ratio": None, "max_ellipsis_lines_ratio": None}},
]

DT_FINEWEB = r'''
import sys, time
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.filters import (GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter,
                                        FineWebQualityFilter)
def main():
    inp, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ex = lambda name: JsonlWriter(f"{out}/excluded/{name}", compression=None)  # noqa: E731
    pipe = [JsonlReader(inp, glob_pattern="*.jsonl", text_key="text", id_key="id"),
            GopherRepetitionFilter(exclusion_writer=ex("gopher_repetition")),
            GopherQualityFilter(exclusion_writer=ex("gopher_quality")),
            C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=ex("c4")),
            FineWebQualityFilter(exclusion_writer=ex("fineweb")),
            JsonlWriter(f"{out}/kept", compression=None)]
    LocalPipelineExecutor(pipeline=pipe, tasks=workers, workers=workers, logging_dir=f"{out}/logs").run()


if __name__ == "__main__":  # the executor's worker processes import this file again
    main()
'''


def recipe(path: Path, inp: Path, out: Path, process: list, workers: int) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"input": {"paths": [str(inp)], "shard_size_mb": 8},
                                    "output": {"path": str(out), "rows_per_shard": 1_000_000, "trace_samples": 0},
                                    "executor": {"type": "local", "workers": workers}, "process": process}))
    return path


def run_thresher(work: Path, inp: Path, process: list, workers: int, name: str) -> tuple[float, int, Path]:
    out = work / f"out-thresher-{name}"
    shutil.rmtree(out, ignore_errors=True)
    r = recipe(work / f"recipe-{name}.yaml", inp, out, process, workers)
    wall, rss = run_measured([sys.executable, "-m", "thresher", "run", str(r), "-q"],
                             env={"PYTHONPATH": str(ROOT)})
    return wall, rss, out


def kept_ids_thresher(out: Path) -> set[str]:
    ids = set()
    for f in sorted((out / "data").glob("*.jsonl")):
        with open(f) as fh:
            ids |= {json.loads(x)["id"] for x in fh}
    return ids


def thresher_reasons(subset: Path, process: list) -> dict[str, str]:
    """First drop reason per document, by applying the ops in order in this process."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.json as pj
    import yaml

    from thresher.pipeline.ops import Filter, first_failing
    from thresher.pipeline.recipe import parse_recipe

    r = parse_recipe(yaml.safe_dump({"input": {"paths": [str(subset)]}, "output": {"path": "x"}, "process": process}))
    table = pj.read_json(subset)
    reasons: dict[str, str] = {}
    for op in r.build_ops():
        op.ensure_setup()
        if isinstance(op, Filter):
            masks = op.drop_reasons(op.compute_stats(table))
            ids, names = table["id"].to_pylist(), list(masks)
            keep, first = first_failing(masks, table.num_rows)  # the runner's decision
            for i in np.flatnonzero(~keep):
                reasons[ids[i]] = f"{op.name}:{names[first[i]]}"
            table = table.filter(pa.array(keep))
        else:
            table = op.process(table)
    return reasons


def ensure_venv(work: Path, name: str, packages: list[str], reqs: Path) -> Path:
    venv = work / f"venv-{name}"
    py = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *packages, "-r", str(reqs)], check=True)
        marker.write_text("ok")
    return py


def split_shards(src: Path, out_dir: Path, n_shards: int) -> Path:
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    lines = src.read_text().splitlines(keepends=True)
    per = (len(lines) + n_shards - 1) // n_shards
    for i in range(n_shards):
        (out_dir / f"shard-{i}.jsonl").write_text("".join(lines[i * per:(i + 1) * per]))
    return out_dir


def dt_reasons(out: Path) -> tuple[set[str], dict[str, str]]:
    kept = set()
    for f in (out / "kept").glob("*.jsonl"):
        kept |= {json.loads(x)["id"] for x in f.read_text().splitlines()}
    reasons = {}
    for f in (out / "excluded").rglob("*.jsonl"):
        for x in f.read_text().splitlines():
            d = json.loads(x)
            reasons[d["id"]] = f"{f.parent.name}:{d.get('metadata', {}).get('filter_reason', '?')}"
    return kept, reasons


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args, work, corpus = corpus_args(ap, **{"peer-n": (int, 20_000)})
    W = args.workers
    subset = work / f"subset_{args.peer_n}.jsonl"
    with open(corpus) as f:
        subset.write_text("".join(itertools.islice(f, args.peer_n)))
    rows = []

    def add(tool, what, n, wall, rss, kept=None):
        rows.append((tool, what, n, wall, n / wall / W, rss / 2**20, kept))

    wall, rss, out = run_thresher(work, corpus, FINEWEB_HEURISTIC, W, "fineweb-full")
    add("thresher", "fineweb heuristic", args.n, wall, rss, len(kept_ids_thresher(out)))
    wall, rss, out_sub = run_thresher(work, subset, FINEWEB_HEURISTIC, W, "fineweb-subset")
    add("thresher", "fineweb heuristic", args.peer_n, wall, rss, len(kept_ids_thresher(out_sub)))
    wall, rss, out_peer = run_thresher(work, subset, PEER_HEURISTIC, W, "peer-subset")
    add("thresher", "peers' Gopher R1-R6", args.peer_n, wall, rss, len(kept_ids_thresher(out_peer)))

    agreement = None
    if not args.skip_peers:
        shards = split_shards(subset, work / "subset_shards", W)
        dt_py = ensure_venv(work, "dt", ["datatrove[processing]"], PEERS / "overlay_dt_requirements.txt")
        script = work / "dt_fineweb.py"
        script.write_text(DT_FINEWEB)
        dt_out = work / "out-dt-fineweb"
        shutil.rmtree(dt_out, ignore_errors=True)
        wall, rss = run_measured([str(dt_py), str(script), str(shards), str(dt_out), str(W)])
        dt_kept, dt_why = dt_reasons(dt_out)
        add("datatrove", "fineweb heuristic", args.peer_n, wall, rss, len(dt_kept))
        dt_out2 = work / "out-dt-peer"
        wall, rss = run_measured([str(dt_py), str(PEERS / "dt_pipelines.py"), "--part", "heuristic", "--input",
                                  str(shards), "--out", str(dt_out2), "--workers", str(W)])
        add("datatrove", "peers' Gopher R1-R6", args.peer_n, wall, rss,
            sum(len(f.read_text().splitlines()) for f in (dt_out2 / "kept").glob("*.jsonl*")))

        dj_py = ensure_venv(work, "dj", ["py-data-juicer"], PEERS / "overlay_dj_requirements.txt")
        dj_out = work / "out-dj" / "kept.jsonl"
        shutil.rmtree(dj_out.parent, ignore_errors=True)
        wall, rss = run_measured([str(dj_py), str(PEERS / "dj_run.py"), "--config", str(PEERS / "dj_heuristic.yaml"),
                                  "--dataset_path", str(subset), "--export_path", str(dj_out), "--np", str(W)],
                                 env={"PYTHONPATH": "", "HF_DATASETS_CACHE": str(work / "dj-cache")},
                                 cwd=str(ROOT))  # dj_heuristic.yaml names ../shared/tools/peers/dj_assets
        dj_kept = len(dj_out.read_text().splitlines())  # (its stats go to a separate *_stats.jsonl)
        add("Data-Juicer", "nearest filters (dj_heuristic.yaml)", args.peer_n, wall, rss, dj_kept)

        ours_kept = kept_ids_thresher(out_sub)
        ours_why = thresher_reasons(subset, FINEWEB_HEURISTIC)
        with open(subset) as f:
            all_ids = [json.loads(x)["id"] for x in f]
        same = sum((i in ours_kept) == (i in dt_kept) for i in all_ids)
        diff = collections.Counter((ours_why.get(i, "KEPT"), dt_why.get(i, "KEPT")) for i in all_ids
                                   if (i in ours_kept) != (i in dt_kept))
        agreement = (same / len(all_ids), diff)

    print(f"\nmachine: {os.cpu_count()} cores; workers {W}; {time.strftime('%Y-%m-%d')}")
    print("| tool | recipe | docs | wall s | docs/s per core | peak RSS MB | kept |")
    print("|---|---|---|---|---|---|---|")
    for tool, what, n, wall, dps, rss, kept in rows:
        print(f"| {tool} | {what} | {n:,} | {wall:.1f} | {dps:,.0f} | {rss:,.0f} | {kept if kept is not None else ''} |")
    if agreement:
        frac, diff = agreement
        print(f"\ndecisions agree with datatrove on {frac:.2%} of {args.peer_n:,} documents; disagreements:")
        print("| thresher | datatrove | docs |\n|---|---|---|")
        for (a, b), c in diff.most_common(25):
            print(f"| {a} | {b} | {c} |")


if __name__ == "__main__":
    main()
