"""Near-duplicate removal: thresher vs datasketch, rensa and datatrove.

    python bench/dedup.py                       # 100k docs end to end (all tools) + 1M (thresher)
    python bench/dedup.py --n 100000 --big 0    # skip the 1M run

1. Signatures per second per core on ~1 KB real-paragraph documents (corpus documents cut to
   1,000 characters), word 5-grams, 128 permutations, one process each: thresher's batch kernel,
   datasketch ``MinHash.update_batch``, rensa ``RMinHash`` (rensa installed by this script into a
   throwaway venv).
2. End-to-end near-duplicate removal (threshold 0.8 / datatrove's 14x8 bands) on the corpus:
   thresher's recipe (2 workers), datasketch MinHashLSH (signatures + insert + query, one process),
   datatrove's MinHash pipeline (../shared/tools/peers/dt_pipelines.py --part minhash, 2 workers).
   Wall time, docs/s and peak RSS of the process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import SHARED, make_corpus, run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEERS = SHARED / "tools" / "peers"

SIG_SCRIPT = r'''
import json, sys, time
import numpy as np
texts = [json.loads(l)["text"] for l in open(sys.argv[1])]
def shingles(t):
    w = t.lower().split()
    return [" ".join(w[i:i + 5]) for i in range(max(len(w) - 4, 1))]
which = sys.argv[2]
t0 = time.perf_counter()  # text -> signature, shingling included (as thresher's figure includes it)
if which == "datasketch":
    from datasketch import MinHash
    for t in texts:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([x.encode() for x in shingles(t)])
elif which == "rensa":
    from rensa import RMinHash
    for t in texts:
        m = RMinHash(num_perm=128, seed=1)
        m.update(shingles(t))
        m.digest()
print(json.dumps({"seconds": time.perf_counter() - t0, "docs": len(texts)}))
'''

DS_LSH_SCRIPT = r'''
import json, sys
from datasketch import MinHash, MinHashLSH
lsh = MinHashLSH(threshold=0.8, num_perm=112, params=(14, 8))
kept = 0
with open(sys.argv[1]) as f:
    for line in f:
        d = json.loads(line)
        w = d["text"].lower().split()
        m = MinHash(num_perm=112, seed=1)
        m.update_batch([" ".join(w[i:i + 5]).encode() for i in range(max(len(w) - 4, 1))])
        if lsh.query(m):
            continue  # a near-duplicate of a kept document
        lsh.insert(d["id"], m)
        kept += 1
print(json.dumps({"kept": kept}))
'''


def one_kb_docs(corpus: Path, out: Path, n: int) -> Path:
    with open(corpus) as f, open(out, "w") as g:
        for i, line in enumerate(f):
            if i >= n:
                break
            d = json.loads(line)
            text = d["text"][:1000].rsplit(" ", 1)[0]
            g.write(json.dumps({"id": d["id"], "text": text}) + "\n")
    return out


def thresher_signatures(path: Path) -> float:
    import pyarrow.json as pj

    from thresher.operators.common.minhash import permutations, signatures

    text = pj.read_json(path)["text"]
    a, b = permutations(128, 1)
    signatures(text.slice(0, 100), 5, a, b)  # compile / load the cached kernel
    t0 = time.perf_counter()
    signatures(text, 5, a, b)
    return time.perf_counter() - t0


def venv(work: Path, name: str, packages: list[str]) -> Path:
    v = work / f"venv-{name}"
    if not (v / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(v)], check=True)
        subprocess.run([str(v / "bin" / "python"), "-m", "pip", "install", "-q", *packages], check=True)
        (v / ".installed").write_text("ok")
    return v / "bin" / "python"


def run_thresher(work: Path, corpus: Path, name: str) -> tuple[float, int, int]:
    import yaml

    out = work / f"out-dedup-{name}"
    shutil.rmtree(out, ignore_errors=True)
    r = work / f"recipe-dedup-{name}.yaml"
    r.write_text(yaml.safe_dump({
        "input": {"paths": [str(corpus)], "shard_size_mb": 32},
        "output": {"path": str(out), "rows_per_shard": 1_000_000, "trace_samples": 0},
        "executor": {"type": "local", "workers": 2},
        "process": [{"minhash_dedup": {"threshold": 0.8, "num_perm": 112, "bands": 14, "rows": 8, "ngram": 5}}]}))
    wall, rss = run_measured([sys.executable, "-m", "thresher", "run", str(r), "-q"], env={"PYTHONPATH": str(ROOT)})
    kept = json.loads((out / "ledger.json").read_text())["totals"]["output"]
    shutil.rmtree(out, ignore_errors=True)
    return wall, rss, kept


def split_shards(src: Path, out_dir: Path, n: int) -> Path:
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    files = [open(out_dir / f"shard-{i}.jsonl", "w") for i in range(n)]  # noqa: SIM115
    with open(src) as f:
        lines = f.readlines()
    per = (len(lines) + n - 1) // n
    for i, fh in enumerate(files):
        fh.writelines(lines[i * per:(i + 1) * per])
        fh.close()
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--big", type=int, default=1_000_000, help="a second, thresher-only size (0 to skip)")
    ap.add_argument("--sig-docs", type=int, default=20_000)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "thresher-bench")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(args.n, work / f"corpus_{args.n}.jsonl")

    # 1. signatures per second per core
    docs1k = one_kb_docs(corpus, work / f"docs1k_{args.sig_docs}.jsonl", args.sig_docs)
    sig = {"thresher": args.sig_docs / thresher_signatures(docs1k)}
    if not args.skip_peers:
        py = venv(work, "rensa", ["rensa", "datasketch"])
        script = work / "sig_bench.py"
        script.write_text(SIG_SCRIPT)
        for tool in ("datasketch", "rensa"):
            res = json.loads(subprocess.run([str(py), str(script), str(docs1k), tool], check=True,
                                            capture_output=True, text=True).stdout)
            sig[tool] = res["docs"] / res["seconds"]

    # 2. end to end
    rows = []
    wall, rss, kept = run_thresher(work, corpus, str(args.n))
    rows.append(("thresher (2 workers)", args.n, wall, rss, kept))
    if not args.skip_peers:
        script = work / "ds_lsh.py"
        script.write_text(DS_LSH_SCRIPT)
        py = venv(work, "rensa", ["rensa", "datasketch"])
        wall, rss = run_measured([str(py), str(script), str(corpus)])
        rows.append(("datasketch MinHashLSH (1 process)", args.n, wall, rss, None))
        dt_py = work / "venv-dt" / "bin" / "python"
        if dt_py.exists():
            shards = split_shards(corpus, work / f"shards_{args.n}", 2)
            out = work / "out-dt-minhash"
            wall, rss = run_measured([str(dt_py), str(PEERS / "dt_pipelines.py"), "--part", "minhash", "--input",
                                      str(shards), "--out", str(out), "--workers", "2"])
            kept = sum(len(f.read_text().splitlines()) for f in (out / "kept").glob("*.jsonl*"))
            rows.append(("datatrove MinHash (2 workers)", args.n, wall, rss, kept))
    if args.big:
        big = make_corpus(args.big, work / f"corpus_{args.big}.jsonl")
        wall, rss, kept = run_thresher(work, big, str(args.big))
        rows.append(("thresher (2 workers)", args.big, wall, rss, kept))

    print(f"\nmachine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    print("signatures per second per core (~1 KB docs, word 5-grams, 128 permutations):")
    for tool, v in sig.items():
        print(f"  {tool}: {v:,.0f}" + (f"  (thresher {sig['thresher'] / v:.1f}x)" if tool != "thresher" else ""))
    print("| tool | docs | wall s | docs/s | peak RSS MB | kept |\n|---|---|---|---|---|---|")
    for tool, n, wall, rss, kept in rows:
        print(f"| {tool} | {n:,} | {wall:.1f} | {n / wall:,.0f} | {rss / 2**20:,.0f} | {kept if kept is not None else ''} |")


if __name__ == "__main__":
    main()
