"""simhash_dedup: the SimHash kernel against a plain-Python reference, block bucketing against brute
force (it must find every pair within the Hamming distance: pigeonhole), and real recipe runs with
planted near-duplicates (found), distinct documents (kept), keep policies, mark mode, and the same
result for 1 and 2 workers."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.common.tokenize import fnv1a
from thresher.operators.dedup.simhash import SimHashDedup, block_masks, near_pairs, popcounts, simhashes
from thresher.testing import check_op

M64 = (1 << 64) - 1
K = 0x9E3779B97F4A7C15


def fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & M64
    return h ^ (h >> 33)


def ref_simhash(text: str, window: int = 6, tokenization: str = "space") -> int:
    """Data-Juicer's SimHash in plain Python (with thresher's shingle hash): majority of shingle bits."""
    text = text.lower()
    if tokenization == "space":
        words = [fnv1a(w) for w in text.split()]
        k = min(window, len(words))
        shingles = []
        for s in range(len(words) - k + 1) if words else []:
            h = 0
            for w in words[s:s + k]:
                h = (h * K + w) & M64
            shingles.append(h)
    else:
        k = min(window, len(text))
        shingles = [fnv1a(text[s:s + k]) for s in range(len(text) - k + 1)] if text else []
    out = 0
    for b in range(64):
        ones = sum((fmix64(h) >> b) & 1 for h in shingles)
        if 2 * ones > len(shingles):
            out |= 1 << b
    return out


WORDS = st.sampled_from(["river", "Town", "bridge", "mill", "canal", "x", "ünïcode", "日本", "a"])


@settings(max_examples=60)
@given(docs=st.lists(st.lists(WORDS, max_size=20).map(" ".join), min_size=1, max_size=6),
       window=st.integers(1, 7), tokenization=st.sampled_from(["space", "character"]))
def test_simhash_kernel_matches_python(docs, window, tokenization):
    got, per = simhashes(pa.array(docs), window, tokenization)
    assert [int(x) for x in got] == [ref_simhash(d, window, tokenization) for d in docs]
    assert [bool(p == 0) for p in per] == [not (d.split() if tokenization == "space" else d) for d in docs]


@pytest.mark.parametrize("blocks,k", [(6, 4), (6, 3), (4, 3), (8, 2), (5, 0), (1, 0)])
def test_block_masks_cover_every_close_pair(blocks, k):
    masks = block_masks(blocks, k)
    assert len(masks) == len(list(itertools.combinations(range(blocks), k)))
    assert all(bin(m).count("1") >= (blocks - k) * (64 // blocks) for m in masks)
    # every set of k differing bits leaves some mask untouched
    rng = random.Random(blocks * 10 + k)
    for _ in range(300):
        diff = sum(1 << b for b in rng.sample(range(64), k))
        assert any(diff & m == 0 for m in masks)


def brute_pairs(hashes: np.ndarray, k: int) -> set[tuple[int, int]]:
    out = set()
    for i, j in itertools.combinations(range(len(hashes)), 2):
        if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= k:
            out.add((i, j))
    return out


@settings(max_examples=40)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), cfg=st.sampled_from([(6, 4), (6, 3), (4, 2), (8, 3), (3, 0)]))
def test_block_bucketing_finds_exactly_the_close_pairs(seed, n, cfg):
    """Distinct hashes, many of them planted within 0-6 bits of another: the pairs found are exactly
    the pairs within k bits (no miss, no false pair)."""
    blocks, k = cfg
    rng = np.random.default_rng(seed)
    hashes = [int(x) for x in rng.integers(0, 2**63, size=n, dtype=np.uint64) * 2 + rng.integers(0, 2, size=n, dtype=np.uint64)]
    for i in range(1, n):
        if rng.random() < 0.6:
            src = hashes[int(rng.integers(0, i))]
            flips = rng.choice(64, size=int(rng.integers(0, 7)), replace=False)
            hashes[i] = src ^ sum(1 << int(b) for b in flips)
    h = np.unique(np.array(hashes, dtype=np.uint64))
    reps = np.arange(len(h), dtype=np.int64)
    a, b, candidates = near_pairs(reps, h, blocks, k)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == brute_pairs(h, k)
    assert candidates >= len(a)


def test_popcount():
    x = np.array([0, 1, 3, M64, 1 << 63, 0x5555555555555555], dtype=np.uint64)
    assert popcounts(x).tolist() == [0, 1, 2, 64, 1, 32]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2**63, size=1000, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, size=1000, dtype=np.uint64)
    assert popcounts(y).tolist() == [bin(int(v)).count("1") for v in y]


def test_contract():
    check_op(SimHashDedup, [{"text": "a b c d e f g"}, {"text": "a b c d e f g"}, {"text": "other words here"}])


# ------------------------------------------------------------------------------------------- runs
def make_vocab(rng: random.Random, n: int = 4000) -> list[str]:
    return [f"{rng.choice('bcdfgklmnprst')}{rng.choice('aeiou')}{rng.choice('bcdfgklmnprst')}{i}" for i in range(n)]


def planted(n_base: int = 60, seed: int = 1) -> tuple[list[dict], dict[str, str]]:
    """Base documents (600-900 random words, so pairwise independent) first, then near-copies: exact,
    re-cased and re-spaced, and with 1-3 words replaced. Returns the rows and copy -> source."""
    rng = random.Random(seed)
    vocab = make_vocab(rng)
    docs = [{"id": f"b{i}", "text": " ".join(rng.choice(vocab) for _ in range(rng.randint(600, 900)))}
            for i in range(n_base)]
    source = {}
    for i in range(n_base):
        src = docs[rng.randrange(n_base)]
        kind = ("exact", "case", "edit1", "edit2", "edit3")[i % 5]
        w = src["text"].split()
        if kind == "case":
            text = "  ".join(x.upper() if j % 7 == 0 else x for j, x in enumerate(w)) + "\n"
        else:
            for _ in range({"exact": 0, "edit1": 1, "edit2": 2, "edit3": 3}[kind]):
                w[rng.randrange(len(w))] = rng.choice(vocab)
            text = " ".join(w)
        docs.append({"id": f"c{i}-{kind}", "text": text})
        source[f"c{i}-{kind}"] = src["id"]
    return docs, source


def expected_kept(docs: list[dict], k: int = 4) -> set[str]:
    """The first row of each connected component of the 'within k bits' graph, by brute force."""
    h, _ = simhashes(pa.array([d["text"] for d in docs]))
    parent = list(range(len(docs)))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in itertools.combinations(range(len(docs)), 2):
        if bin(int(h[i]) ^ int(h[j])).count("1") <= k:
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
    return {docs[i]["id"] for i in range(len(docs)) if find(i) == i}


def test_planted_near_duplicates_are_found_and_distinct_documents_kept(tmp_path):
    docs, source = planted()
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "o", [{"simhash_dedup": {}}])
    kept = {r["id"] for r in read_output(tmp_path / "o")}
    assert kept == expected_kept(docs)
    # no base document is a near-duplicate of another base document
    assert {d["id"] for d in docs if d["id"].startswith("b")} <= kept
    # exact and re-cased/re-spaced copies always go; most copies with a word or two replaced too
    copies = [c for c in source if c.endswith(("exact", "case"))]
    assert copies and not kept & set(copies)
    edited = [c for c in source if "edit" in c]
    assert sum(c not in kept for c in edited) >= 0.5 * len(edited)
    led = json.loads((tmp_path / "o" / "ledger.json").read_text())
    op = led["ops"]["simhash_dedup"]
    assert led["balanced"] and op["dropped"] == {"near_duplicate": len(docs) - len(kept)}
    assert op["counters"]["same_simhash_rows"] >= len(copies) // 2 and op["counters"]["verified_pairs"] > 0
    profile = json.loads((tmp_path / "o" / "profile.json").read_text())
    sizes = {int(s): n for s, n in profile["ops"]["simhash_dedup"]["distributions"]["cluster_size"].items()}
    assert sum((s - 1) * n for s, n in sizes.items()) == len(docs) - len(kept)


def test_same_result_for_one_and_two_workers(tmp_path):
    docs, _ = planted(40, seed=4)
    random.Random(2).shuffle(docs)
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "w1", [{"simhash_dedup": {}}], workers=1, input={"shard_size_mb": 0.05})
    run_recipe([src], tmp_path / "w2", [{"simhash_dedup": {}}], workers=2, input={"shard_size_mb": 0.05})
    a, b = read_output(tmp_path / "w1"), read_output(tmp_path / "w2")
    assert a == b and len(a) < len(docs)
    assert {r["id"] for r in a} == expected_kept(docs)


def test_mark_mode_and_keep_longest(tmp_path):
    rng = random.Random(3)
    vocab = make_vocab(rng)
    base = " ".join(rng.choice(vocab) for _ in range(500))
    docs = [{"id": "a", "text": base}, {"id": "other", "text": " ".join(rng.choice(vocab) for _ in range(500))},
            {"id": "b", "text": base + "\n"}, {"id": "c", "text": base.upper() + " !"}]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    res = run_recipe([src], tmp_path / "m", [{"simhash_dedup": {"mode": "mark"}}])
    rows = {r["id"]: r for r in read_output(tmp_path / "m")}
    assert res.output_rows == 4
    assert rows["other"]["dup_cluster"] is None and not rows["other"]["is_duplicate"]
    assert rows["a"]["dup_cluster"] == rows["b"]["dup_cluster"] == rows["c"]["dup_cluster"] is not None
    assert [i for i in "abc" if not rows[i]["is_duplicate"]] == ["a"]
    run_recipe([src], tmp_path / "l", [{"simhash_dedup": {"keep": "longest"}}])
    assert sorted(r["id"] for r in read_output(tmp_path / "l")) == ["c", "other"]


def test_character_shingles_and_ignore_pattern(tmp_path):
    rng = random.Random(5)
    chars = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞观争究包组造落视济喜离虽坏兴切阿"
    base = "".join(rng.choice(chars) for _ in range(800))
    other = "".join(rng.choice(chars) for _ in range(800))
    docs = [{"id": "a", "text": base}, {"id": "b", "text": base[:400] + "，。" + base[400:]}, {"id": "o", "text": other}]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "o", [{"simhash_dedup": {"tokenization": "character", "window_size": 4,
                                                          "ignore_pattern": r"\p{P}"}}])
    assert sorted(r["id"] for r in read_output(tmp_path / "o")) == ["a", "o"]


def test_empty_documents_are_never_duplicates(tmp_path):
    docs = [{"id": str(i), "text": t} for i, t in enumerate(["", "   ", "\n", "short", "short", "two words"])]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    run_recipe([src], tmp_path / "o", [{"simhash_dedup": {}}])
    assert [r["id"] for r in read_output(tmp_path / "o")] == ["0", "1", "2", "3", "5"]


def test_bad_params_are_recipe_errors():
    from thresher.pipeline.errors import RecipeError
    from thresher.pipeline.recipe import parse_recipe

    def parse(params: str):
        parse_recipe(f"input: {{paths: [a]}}\noutput: {{path: o}}\nprocess:\n  - simhash_dedup: {params}\n")

    with pytest.raises(RecipeError, match="must be less than num_blocks"):
        parse("{num_blocks: 4, hamming_distance: 4}")
    with pytest.raises(RecipeError, match="block keys"):
        parse("{num_blocks: 40, hamming_distance: 8}")
    with pytest.raises(RecipeError, match="keep_column"):
        parse("{keep: column}")
