"""semantic_dedup on real paragraphs (C4 and Wikipedia demo sets): planted reformatted copies —
sentences reordered, case / whitespace / punctuation changed, the tail cut — are found with the
default threshold (0.9), and distinct real paragraphs are not removed. Figures are printed (``-s``) and
recorded in docs/semantic.md."""

from __future__ import annotations

import json
import random
import re

import pytest

from thresher.api import apply_op

SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def paragraphs(shared_data) -> list[str]:
    folder = shared_data / "llamafactory_c4_wiki_demo"
    texts = [json.loads(line)["text"] for line in (folder / "c4_demo.jsonl").open(encoding="utf-8")]
    texts.append((folder / "wiki_demo.txt").read_text(encoding="utf-8"))
    seen, out = set(), []
    for text in texts:
        for para in text.split("\n"):
            para = " ".join(para.split())
            if 300 <= len(para) <= 1200 and len(SENTENCE.split(para)) >= 3 and para.lower() not in seen:
                seen.add(para.lower())
                out.append(para)
    return out


def reorder(p: str, rng: random.Random) -> str:
    s = SENTENCE.split(p)
    while s == SENTENCE.split(p):
        rng.shuffle(s)
    return " ".join(s)


def reformat(p: str, rng: random.Random) -> str:
    """Lower case, punctuation dropped, whitespace doubled and broken into lines."""
    words = re.sub(r"[^\w\s']", " ", p.lower()).split()
    return "".join(w + ("\n" if rng.random() < 0.1 else "  ") for w in words).strip()


def truncate(p: str, rng: random.Random) -> str:
    """The first 80% of the characters, cut at a word."""
    return p[: int(len(p) * 0.8)].rsplit(" ", 1)[0]


def combined(p: str, rng: random.Random) -> str:
    return reformat(reorder(p, rng), rng).upper()


TRANSFORMS = {"reorder": reorder, "reformat": reformat, "truncate": truncate, "reorder+reformat+upper": combined}


@pytest.mark.network  # the MiniLM model, fetched into the test cache once
@pytest.mark.slow
def test_planted_semantic_copies_of_real_paragraphs(shared_data):
    rng = random.Random(17)
    pool = paragraphs(shared_data)
    assert len(pool) >= 250, len(pool)
    originals = rng.sample(pool, 240)
    rows = [{"id": f"orig-{i}", "text": p} for i, p in enumerate(originals)]
    copies = {}
    for j, i in enumerate(rng.sample(range(len(originals)), 80)):
        kind = list(TRANSFORMS)[j % len(TRANSFORMS)]
        copies[f"copy-{j}"] = kind
        rows.append({"id": f"copy-{j}", "text": TRANSFORMS[kind](originals[i], rng)})
    embedded = apply_op("embed", rows)
    figures = {}
    for threshold in (0.9, 0.95):  # 0.9 is the default
        kept = set(apply_op("semantic_dedup", embedded, threshold=threshold)["id"].to_pylist())
        removed = {r["id"] for r in rows} - kept
        found = removed & set(copies)
        per_kind = {k: round(sum(1 for c in found if copies[c] == k) / sum(1 for c in copies.values() if c == k), 2)
                    for k in TRANSFORMS}
        figures[threshold] = (len(found) / max(1, len(removed)), len(found) / len(copies), per_kind)
    minhash_kept = set(apply_op("minhash_dedup", rows, threshold=0.8)["id"].to_pylist())
    minhash_recall = len(set(copies) - minhash_kept) / len(copies)
    print(f"\n{len(originals)} real paragraphs + {len(copies)} planted copies; minhash_dedup (0.8) recall {minhash_recall:.3f}")
    for threshold, (precision, recall, per_kind) in figures.items():
        print(f"semantic_dedup threshold {threshold}: precision {precision:.3f}, recall {recall:.3f}, "
              f"by kind {json.dumps(per_kind)}")
    precision, recall, per_kind = figures[0.9]
    assert precision >= 0.95 and recall >= 0.8
    assert per_kind["reorder"] >= 0.8 and per_kind["reformat"] >= 0.8 and per_kind["truncate"] >= 0.8
    assert figures[0.95][0] >= 0.95 and figures[0.95][1] >= 0.5
    assert minhash_recall < 0.5 < recall
