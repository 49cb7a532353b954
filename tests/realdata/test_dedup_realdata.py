"""Near-duplicate accuracy on real text: planted near-copies of real paragraphs (make_corpus.py)
and templated T0 prompts, against brute-force Jaccard and datasketch's MinHashLSH (both measured)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
from datasketch import MinHash, MinHashLSH

from tests.conftest import read_output, run_recipe, write_jsonl

THR = 0.8


def w5(text):
    w = text.lower().split()
    return {" ".join(w[i:i + 5]) for i in range(max(len(w) - 4, 1))}


def jac(a, b):
    return len(a & b) / len(a | b) if a | b else 1.0


def evaluate(tmp_path, docs, pairs, verify="exact"):
    """recall over pairs with J >= THR + 0.05; precision: each marked duplicate has a J >= THR partner
    in its cluster; datasketch's recall with the same bands on the same pairs."""
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    run_recipe([src], tmp_path / "out", [{"minhash_dedup": {"threshold": THR, "mode": "mark", "verify": verify}}],
               workers=2, input={"shard_size_mb": 0.5})
    rows = read_output(tmp_path / "out")
    clusters = {}
    for r in rows:
        if r["dup_cluster"] is not None:
            clusters.setdefault(r["dup_cluster"], set()).add(r["id"])
    member = {m: c for c in clusters.values() for m in c}
    sets = {d["id"]: w5(d["text"]) for d in docs}
    strong = [(a, b) for a, b, j in pairs if j >= THR + 0.05]
    recall = sum(a in member and b in member[a] for a, b in strong) / len(strong)
    marked = [r["id"] for r in rows if r["is_duplicate"]]
    precision = sum(max(jac(sets[m], sets[o]) for o in member[m] if o != m) >= THR for m in marked) / max(1, len(marked))
    lsh = MinHashLSH(threshold=THR, num_perm=128)
    mh = {}
    for d in docs:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in sets[d["id"]]])
        mh[d["id"]] = m
        lsh.insert(d["id"], m)
    ds_recall = sum(b in lsh.query(mh[a]) for a, b in strong) / len(strong)
    return recall, precision, ds_recall, len(strong)


@pytest.mark.slow
def test_planted_near_duplicates_of_real_paragraphs(shared_data, tmp_path):
    tool = shared_data.parent / "tools" / "make_corpus.py"
    out = tmp_path / "corpus.jsonl"
    subprocess.run([sys.executable, str(tool), "--n", "4000", "--out", str(out), "--seed", "3"], check=True,
                   capture_output=True, env={"THRESHER_REAL_DATA": str(shared_data), "PATH": "/usr/bin:/bin"})
    docs = [json.loads(x) for x in out.read_text().splitlines()]
    groups = [json.loads(x) for x in out.with_name(out.stem + ".dups.jsonl").read_text().splitlines()]
    pairs = [(g["orig"], m["id"], m.get("jaccard5", 1.0)) for g in groups for m in g["members"] if m["kind"] != "orig"]
    recall, precision, ds_recall, n = evaluate(tmp_path, docs, pairs)
    print(f"\nplanted (real paragraphs): {n} pairs >= {THR + 0.05}; recall {recall:.3f}, precision {precision:.3f}; "
          f"datasketch recall {ds_recall:.3f}")
    assert recall >= 0.95 and precision >= 0.99 and recall >= ds_recall - 0.01


def test_templated_t0_prompts(shared_data, tmp_path):
    folder = shared_data / "t0_prompted_sft_subset" / "data_per_template"
    files = sorted(folder.glob("adversarial_qa_dbert_*.jsonl.gz"))
    if not files:
        pytest.skip("no adversarial_qa templates in this copy")
    docs = []
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= 300:
                    break
                docs.append({"id": f"{f.name.split('.')[0]}:{i}", "text": json.loads(line)["prompt"]})
    sets = [w5(d["text"]) for d in docs]
    pairs = []
    for i in range(len(docs)):  # brute force over the sample
        for j in range(i + 1, len(docs)):
            if len(sets[i]) and len(sets[j]):
                inter = len(sets[i] & sets[j])
                if inter * 2 >= min(len(sets[i]), len(sets[j])):
                    pairs.append((docs[i]["id"], docs[j]["id"], inter / len(sets[i] | sets[j])))
    recall, precision, ds_recall, n = evaluate(tmp_path, docs, pairs)
    print(f"\nT0 prompts ({len(docs)} from {len(files)} templates): {n} pairs >= {THR + 0.05}; recall {recall:.3f}, "
          f"precision {precision:.3f}; datasketch recall {ds_recall:.3f}")
    assert n > 20 and recall >= 0.95 and precision >= 0.99 and recall >= ds_recall - 0.01
