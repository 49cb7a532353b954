"""Op-seconds of the fineweb recipe's rule filters, a frozen copy of the ops against the working tree.

    python bench/rules_time.py --freeze /tmp/B/ref --rev HEAD     # once: freeze the ops of a revision
    python bench/rules_time.py --ref /tmp/B/ref --input /tmp/corpus_100000.jsonl --rounds 2

Runs the rule part of the `fineweb` recipe (gopher_repetition, gopher_quality, c4_line with
filter_no_terminal_punct false, c4_quality, fineweb_quality) in one process on blocks of
``--block`` documents (about the 16 MB batches the local executor reads), filtering between
ops as the runner does, once with the frozen copy (``--ref``: a package ``bref`` made by
``--freeze`` from ``git show REV:path``) and once with the working tree, interleaved for
``--rounds`` rounds. Prints each op's seconds (wall and CPU of this process) per variant, and
checks that both variants give the same stats, the same drop reasons and the same output text,
block by block (exit status 1 if not).
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson

ROOT = Path(__file__).resolve().parents[1]
OWNED = {  # module in the frozen package -> path in the repository
    "gopher": "operators/filter/gopher.py", "c4": "operators/filter/c4.py", "fineweb": "operators/filter/fineweb.py",
    "c4_lines": "operators/clean/c4_lines.py", "tokenize": "operators/common/tokenize.py",
    "words": "operators/common/words.py", "ngrams": "operators/common/ngrams.py",
    "segments": "operators/common/segments.py", "strings": "operators/common/strings.py",
}
RULES = [("gopher_repetition_filter", "gopher", "GopherRepetitionFilter", {}),
         ("gopher_quality_filter", "gopher", "GopherQualityFilter", {}),
         ("c4_line_filter", "c4_lines", "C4LineFilter", {"filter_no_terminal_punct": False}),
         ("c4_quality_filter", "c4", "C4QualityFilter", {}),
         ("fineweb_quality_filter", "fineweb", "FineWebQualityFilter", {})]


def freeze(dest: Path, rev: str) -> None:
    """Write the ops of ``rev`` as package ``bref`` under ``dest`` (imports rewritten, unregistered)."""
    pkg = dest / "bref"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    names = "|".join(OWNED)
    for mod, path in OWNED.items():
        src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
        src = re.sub(rf"from thresher\.operators\.common\.({names}) import", r"from bref.\1 import", src)
        (pkg / f"{mod}.py").write_text(re.sub(r"^@register\n", "", src, flags=re.M))


def load_ops(package: str, modules: dict[str, str]) -> list:
    from thresher.pipeline.ops import OpContext

    ops = []
    for key, mod, cls_name, params in RULES:
        cls = getattr(importlib.import_module(f"{package}.{modules.get(mod, mod)}"), cls_name)
        ops.append(cls(cls.Params(**params), OpContext(key=key)))
    return ops


def run_chain(ops: list, table: pa.Table, seconds: dict, cpu: dict, record: list | None) -> pa.Table:
    from thresher.pipeline.ops import Filter, first_failing

    for op in ops:
        w0, c0 = time.perf_counter(), time.process_time()
        if isinstance(op, Filter):
            stats = {k: v if isinstance(v, pa.Array | pa.ChunkedArray) else pa.array(v)
                     for k, v in op.compute_stats(table).items()}
            reasons = op.drop_reasons(stats)
            keep, idx = first_failing(reasons, table.num_rows)
            out = table.filter(pa.array(keep))
            facts = (stats, list(reasons), idx)
        else:
            out = op.process(table)
            facts = (op.take_counters(),)
        seconds[op.ctx.key] = seconds.get(op.ctx.key, 0.0) + time.perf_counter() - w0
        cpu[op.ctx.key] = cpu.get(op.ctx.key, 0.0) + time.process_time() - c0
        if record is not None:
            record.append((op.ctx.key, facts))
        table = out
    if record is not None:
        record.append(("output", table.column("text")))
    return table


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, pa.ChunkedArray | pa.Array):
        a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
        b = b.combine_chunks() if isinstance(b, pa.ChunkedArray) else b
        return a.cast(b.type).equals(b) if a.type != b.type else a.equals(b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--freeze", type=Path, help="write the frozen copy here and exit")
    ap.add_argument("--rev", default="HEAD", help="revision to freeze (default HEAD)")
    ap.add_argument("--ref", type=Path, help="directory holding the frozen package bref")
    ap.add_argument("--input", default="/tmp/corpus_100000.jsonl")
    ap.add_argument("--n", type=int, default=0, help="first N documents only (0: all)")
    ap.add_argument("--block", type=int, default=8000, help="documents per block (default 8000, ~16 MB)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=["ref", "new"], help="time one variant (for profiling)")
    ap.add_argument("--no-check", action="store_true")
    args = ap.parse_args()
    if args.freeze:
        freeze(args.freeze, args.rev)
        return 0
    table = pajson.read_json(args.input, read_options=pajson.ReadOptions(block_size=64 << 20)).select(["id", "text"])
    if args.n:
        table = table.slice(0, args.n)
    blocks = [table.slice(i, args.block).combine_chunks() for i in range(0, table.num_rows, args.block)]
    variants = {}
    if args.only != "ref":
        variants["new"] = load_ops("thresher.operators", {"gopher": "filter.gopher", "c4": "filter.c4",
                                                          "fineweb": "filter.fineweb", "c4_lines": "clean.c4_lines"})
    if args.only != "new":
        sys.path.insert(0, str(args.ref))
        variants["ref"] = load_ops("bref", {})
    for ops in variants.values():  # compile / warm up
        run_chain(ops, blocks[0].slice(0, 200), {}, {}, None)
    secs = {v: {} for v in variants}
    cpus = {v: {} for v in variants}
    ok = True
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for b in blocks:
            recs = {}
            for v in order:
                recs[v] = [] if (r == 0 and not args.no_check and len(variants) == 2) else None
                run_chain(variants[v], b, secs[v], cpus[v], recs[v])
            if recs.get("new") is not None and not same(recs["new"], recs["ref"]):
                ok = False
                for x, y in zip(recs["new"], recs["ref"], strict=True):
                    if not same(x, y):
                        print(f"MISMATCH in {x[0]}", file=sys.stderr)
                        break
    print(f"{table.num_rows} docs, blocks of {args.block}, {args.rounds} round(s); seconds summed over rounds")
    print(f"{'op':28s}" + "".join(f"{v + ' wall':>11s}{v + ' cpu':>10s}" for v in variants))
    for key, *_ in RULES + [("total",)]:
        cells = ""
        for v in variants:
            w = sum(secs[v].values()) if key == "total" else secs[v].get(key, 0.0)
            c = sum(cpus[v].values()) if key == "total" else cpus[v].get(key, 0.0)
            cells += f"{w / args.rounds:11.2f}{c / args.rounds:10.2f}"
        print(f"{key:28s}{cells}")
    if len(variants) == 2:
        print("ratio ref/new (wall):", round(sum(secs["ref"].values()) / sum(secs["new"].values()), 2))
        print("identical stats, reasons and output:", "yes" if ok else "NO", "" if not args.no_check else "(not checked)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
