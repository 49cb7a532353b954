"""Exact dedup's resolve in hash partitions (``exact.partitions``): the decisions, counters and
distributions are the same for any partition count, for every keep policy, with duplicates spread
across shards and fingerprint files; and a real run writes the same output with tiny partitions."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.operators.dedup import exact
from thresher.operators.dedup.exact import ExactDedup, UrlDedup
from thresher.pipeline.columns import ROW, SHARD
from thresher.pipeline.executors.passes import fingerprint_frame
from thresher.pipeline.layout import Layout

POLICIES = [{}, {"keep": "longest"}, {"keep": "column", "keep_column": "n"}]


def reference(fp: pl.DataFrame, keep: str) -> tuple[list[tuple[int, int]], int, dict]:
    """The decisions, duplicate groups and cluster sizes, row by row in Python (the definition)."""
    rows = sorted(fp.filter(~pl.col("skip")).iter_rows(named=True), key=lambda r: (r[SHARD], r[ROW]))
    best: dict = {}
    groups: dict = {}
    for order, r in enumerate(rows):
        key = (r["h_hi"], r["h_lo"])
        v = r.get("value")
        v = float("-inf") if v is None or v != v else v
        groups[key] = groups.get(key, 0) + 1
        if keep == "first":
            best.setdefault(key, (0, order, r))
        elif key not in best or v > best[key][0]:
            best[key] = (v, order, r)
    kept = {(b[2][SHARD], b[2][ROW]) for b in best.values()}
    dropped = sorted((r[SHARD], r[ROW]) for r in rows if (r[SHARD], r[ROW]) not in kept)
    sizes: dict = {}
    for n in groups.values():
        if n > 1:
            sizes[str(n)] = sizes.get(str(n), 0) + 1
    return dropped, sum(1 for n in groups.values() if n > 1), dict(sorted(sizes.items(), key=lambda kv: int(kv[0])))


def before(fp: pl.LazyFrame, keep: str) -> tuple[list[tuple[int, int]], int, dict]:
    """What ``HashDedup.resolve`` did before partitions (commit fd7193d): one polars query."""
    lf = fp.filter(~pl.col("skip")).sort([SHARD, ROW]).with_row_index("__order")
    if keep == "first":
        dup = lf.filter(~pl.struct("h_hi", "h_lo").is_first_distinct())
    else:
        lf = lf.with_columns(pl.col("value").fill_null(float("-inf")).fill_nan(float("-inf")))
        dup = (lf.sort(["h_hi", "h_lo", "value", "__order"], descending=[False, False, True, False])
               .filter(~pl.struct("h_hi", "h_lo").is_first_distinct()))
    dup = dup.select(SHARD, ROW, "h_hi", "h_lo").collect()
    groups = dup.group_by("h_hi", "h_lo").len()
    sizes = (groups["len"] + 1).value_counts()
    sizes = sizes.sort(sizes.columns[0])
    return (sorted(zip(dup[SHARD].to_list(), dup[ROW].to_list(), strict=True)), groups.height,
            {str(k): v for k, v in zip(sizes[sizes.columns[0]].to_list(), sizes["count"].to_list(), strict=True)})


def write_fingerprints(tmp, shards: list[pa.Table]) -> pl.LazyFrame:
    """``shards`` as a pass's fingerprint files, read back as the executor reads them."""
    layout = Layout(str(tmp))
    layout.pass_dir(0).mkdir(parents=True, exist_ok=True)
    for s, t in enumerate(shards):
        pq.write_table(t, layout.fingerprints(0, s))
    return fingerprint_frame(layout, 0, len(shards))


def resolved(op, frame) -> tuple[list[tuple[int, int]], dict, dict]:
    out = op.resolve(frame)
    assert out[SHARD].to_list() == sorted(out[SHARD].to_list())
    return list(zip(out[SHARD].to_list(), out[ROW].to_list(), strict=True)), op.take_counters(), op.take_distributions()


@st.composite
def corpora(draw):
    """Fingerprint shards whose keys repeat within and across shards (few distinct h_hi values, some
    shared by different h_lo: the keys' first halves collide), with skipped rows, null, NaN and tied
    keep values, and an empty shard (only the row ids, as ``PassSink.commit`` writes it)."""
    n_keys = draw(st.integers(1, 12))
    his = draw(st.lists(st.sampled_from([0, 1, 2**63, 2**64 - 1, 2**62 + 5, 2**61 * 3]), min_size=n_keys, max_size=n_keys))
    los = draw(st.lists(st.integers(0, 3), min_size=n_keys, max_size=n_keys))
    shards = []
    for _ in range(draw(st.integers(1, 5))):
        n = draw(st.integers(0, 25))
        keys = draw(st.lists(st.integers(0, n_keys - 1), min_size=n, max_size=n))
        if not n and draw(st.booleans()):
            shards.append(pa.table({SHARD: pa.array([], pa.int32()), ROW: pa.array([], pa.int64())}))
            continue
        values = draw(st.lists(st.sampled_from([None, float("nan"), 0.0, -0.0, 1.0, 2.0, 5.0]), min_size=n, max_size=n))
        skip = draw(st.lists(st.booleans(), min_size=n, max_size=n)) if draw(st.booleans()) else [False] * n
        shards.append(pa.table({
            "h_hi": pa.array([his[k] for k in keys], pa.uint64()), "h_lo": pa.array([los[k] for k in keys], pa.uint64()),
            "skip": pa.array(skip, pa.bool_()), "value": pa.array(values, pa.float64()),
            SHARD: pa.array([len(shards)] * n, pa.int32()), ROW: pa.array(range(n), pa.int64())}))
    return shards


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shards=corpora(), policy=st.sampled_from(POLICIES))
def test_same_decisions_for_any_partition_count(tmp_path_factory, monkeypatch, shards, policy):
    tmp = tmp_path_factory.mktemp("fp")
    frame = write_fingerprints(tmp, shards)
    keep = policy.get("keep", "first")
    tables = [pl.from_arrow(t) for t in shards if "h_hi" in t.column_names]
    fp = pl.concat(tables, how="diagonal_relaxed") if tables else pl.DataFrame()  # none: every shard empty
    want = reference(fp, keep) if fp.height else ([], 0, {})
    if fp.height:
        assert before(fp.lazy(), keep) == want  # the reference is what resolve did before
    spills = []
    real_spill = exact._spill
    monkeypatch.setattr(exact, "_spill", lambda rec, sinks: (spills.append(len(sinks)), real_spill(rec, sinks)))
    for rows in (10**9, 16, 8, 4, 2):  # P = 1, and up to 8 and more partitions
        monkeypatch.setattr(exact, "ROWS_PER_PARTITION", rows)
        monkeypatch.setattr(exact, "READ_ROWS", 3)  # several reads, and several slices in ``duplicates``
        op = ExactDedup(ExactDedup.Params(**policy))
        got, counters, dists = resolved(op, frame)
        assert got == want[0]
        assert counters.get("duplicate_groups", 0) == want[1]
        assert dists == {"cluster_size": want[2]}
    n = fp.filter(~pl.col("skip")).height if fp.height else 0
    assert (max(spills, default=1) > 1) == (n > 2)  # split in partitions whenever there were rows enough


def test_partitions_split_by_the_top_bits_of_h_hi(tmp_path, monkeypatch):
    """Past ROWS_PER_PARTITION rows: a power-of-two count of partitions, each a range of h_hi's top
    bits (a key in one only), in input order within, every row once."""
    rng = np.random.default_rng(3)
    shards = []
    for s in range(6):
        hi = rng.integers(0, 2**64, 500, dtype=np.uint64)
        shards.append(pa.table({"h_hi": hi, "h_lo": hi ^ np.uint64(7), "skip": np.zeros(500, bool),
                                SHARD: np.full(500, s, np.int32), ROW: np.arange(500, dtype=np.int64)}))
    frame = write_fingerprints(tmp_path, shards)
    monkeypatch.setattr(exact, "ROWS_PER_PARTITION", 700)
    monkeypatch.setattr(exact, "READ_ROWS", 900)
    parts = list(exact.partitions(frame, False))
    assert len(parts) == 8  # ~3000 expected rows / 700 = 4.3 -> 8
    for p, rec in enumerate(parts):
        assert ((rec["h_hi"] >> np.uint64(61)) == p).all()
        order = rec[SHARD].astype(np.int64) * 10**6 + rec[ROW]
        assert (np.diff(order) > 0).all()
    assert sum(len(p) for p in parts) == 3000


def test_frame_out_of_order_and_in_memory(monkeypatch):
    """A frame that is not a fingerprint frame (the Ray executor's partition: rows in any order,
    in memory) gives the same decisions as in order."""
    rng = np.random.default_rng(5)
    n = 400
    hi = rng.integers(0, 4, n).astype(np.uint64) << np.uint64(62)
    df = pl.DataFrame({"h_hi": hi, "h_lo": rng.integers(0, 3, n).astype(np.uint64), "skip": rng.random(n) < 0.1,
                       "value": rng.integers(0, 4, n).astype(np.float64),
                       SHARD: rng.integers(0, 3, n).astype(np.int32), ROW: np.arange(n, dtype=np.int64)})
    for policy in POLICIES:
        keep = policy.get("keep", "first")
        want = reference(df, keep)
        for rows in (10**9, 50):
            monkeypatch.setattr(exact, "ROWS_PER_PARTITION", rows)
            op = ExactDedup(ExactDedup.Params(**policy))
            got, counters, dists = resolved(op, df.sample(fraction=1.0, shuffle=True, seed=rows).lazy())
            assert (got, counters.get("duplicate_groups", 0), dists["cluster_size"]) == want


def output_digest(out) -> str:
    h = hashlib.sha256()
    for f in sorted((out / "data").glob("part-*")):
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("op", ["exact_dedup", "url_dedup"])
def test_real_run_same_output_with_tiny_partitions(tmp_path, monkeypatch, op):
    """``thresher run`` with 2 workers, 4 input files (shards) with duplicates across them: the
    output, the ledger's counters and profile.json's cluster sizes are the same with 16-row
    partitions (resolve in a child forked from the driver, and in the driver) as with the default."""
    from tests.conftest import run_recipe, write_jsonl

    rng = np.random.default_rng(11)
    texts = [f"document {i} about the river" for i in range(60)]
    inputs = []
    for f in range(4):
        k = rng.integers(0, len(texts), 50)
        docs = [{"id": f"{f}-{i}", "text": texts[j] + (" " if i % 3 else ""), "url": f"https://ex.org/{j % 40}"}
                for i, j in enumerate(k.tolist())]
        inputs.append(write_jsonl(tmp_path / f"in-{f}.jsonl", docs))
    spills = []
    real_spill = exact._spill
    monkeypatch.setattr(exact, "_spill", lambda rec, sinks: (spills.append(len(sinks)), real_spill(rec, sinks)))
    results = {}
    for name, rows, env in [("default", None, None), ("tiny", 16, None), ("tiny-driver", 16, "driver")]:
        if rows:
            monkeypatch.setattr(exact, "ROWS_PER_PARTITION", rows)
        if env:
            monkeypatch.setenv("THRESHER_RESOLVE", env)
        out = tmp_path / name
        run_recipe(inputs, out, [{op: {}}], workers=2)
        ledger = json.loads((out / "ledger.json").read_text())
        profile = json.loads((out / "profile.json").read_text())
        assert ledger["balanced"]
        entry = ledger["ops"][op]
        results[name] = (output_digest(out), entry["dropped"], entry["counters"], profile["ops"][op]["distributions"])
    assert sum(results["default"][1].values()) > 0 and results["default"][2]["duplicate_groups"] > 1
    assert results["tiny"] == results["default"]
    assert results["tiny-driver"] == results["default"]
    assert spills and min(spills) >= 8  # the driver's resolve ran in partitions (~200 rows / 16 -> 16)


def test_url_dedup_skipped_rows_stay(tmp_path, monkeypatch):
    """url_dedup's rows without a URL are skipped (never dropped), in any partition."""
    op = UrlDedup(UrlDedup.Params())
    urls = ["https://a.org/x", None, "http://www.a.org/x/", None, "https://b.org", "b.org/"]
    fp = op.fingerprint(pa.table({"url": pa.array(urls, pa.string()), "text": pa.array(["t"] * 6)}))
    shards = [fp.append_column(SHARD, pa.array([s] * 6, pa.int32())).append_column(ROW, pa.array(range(6), pa.int64()))
              for s in (0, 1)]
    for rows in (10**9, 1):
        monkeypatch.setattr(exact, "ROWS_PER_PARTITION", rows)
        got, counters, dists = resolved(op, write_fingerprints(tmp_path / str(rows), shards))
        assert got == [(0, 2), (0, 5), (1, 0), (1, 2), (1, 4), (1, 5)]
        assert counters == {"duplicate_groups": 2} and dists == {"cluster_size": {"4": 2}}
