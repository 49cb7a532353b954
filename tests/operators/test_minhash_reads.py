"""The MinHash resolve reads its fingerprints one file at a time (issue 19 item 3, flat memory):
``fingerprint_batches`` gives the rows of one streaming query over every file, in the same order,
while at most READ_AHEAD files beyond the one in use are read (polars' ``collect_batches`` has no
backpressure: its reader ran ahead of a slow consumer and queued up to the whole column). A file
without the columns (a shard that fingerprinted no rows) and a frame that is not a fingerprint
frame are read the old way. The driver hands the resolve's freed heap back before the next pass."""

from __future__ import annotations

import json
import threading

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.operators.dedup import minhash
from thresher.operators.dedup.minhash import _GID, fingerprint_batches
from thresher.pipeline import run as run_mod
from thresher.pipeline.columns import ROW, SHARD
from thresher.pipeline.executors.passes import fingerprint_frame, fingerprint_pieces
from thresher.pipeline.layout import Layout
from thresher.pipeline.summary import PIECES


def _write_pass(out, sizes: list[int], seed: int) -> int:
    """Fingerprint files of pass 0 with ``sizes`` rows per shard (0: only the row ids, as
    ``PassSink.commit`` writes a shard that fingerprinted nothing) and their pieces list."""
    layout = Layout(out)
    layout.pass_dir(0).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for shard, n in enumerate(sizes):
        if n:
            t = pa.table({"bands": pa.FixedSizeListArray.from_arrays(pa.array(rng.integers(0, 9, 3 * n, dtype=np.uint64)), 3),
                          "empty": pa.array(rng.random(n) < 0.2),
                          SHARD: pa.array(np.full(n, shard, np.int32)), ROW: pa.array(np.arange(n, dtype=np.int64))})
        else:
            t = pa.table({SHARD: pa.array([], pa.int32()), ROW: pa.array([], pa.int64())})
        pq.write_table(t, layout.fingerprints(0, shard))
    (layout.pass_dir(0) / PIECES).write_text(json.dumps({"pieces": [[["", n]] for n in sizes]}))
    return len(sizes)


def _select(f: pl.LazyFrame) -> pl.LazyFrame:
    return f.filter(~pl.col("empty")).select(_GID, "bands")


def _rows(batches: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(batches) if batches else pl.DataFrame(schema={"gid": pl.Int64, "bands": pl.Array(pl.UInt64, 3)})


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=9), seed=st.integers(0, 2**32 - 1))
def test_pieces_give_the_rows_of_one_query_in_order(tmp_path_factory, sizes, seed):
    out = tmp_path_factory.mktemp("fp")
    frame = fingerprint_frame(Layout(out), 0, _write_pass(out, sizes, seed))
    assert len(fingerprint_pieces(frame)) == len(sizes)
    got = list(fingerprint_batches(frame, _select))
    if len(sizes) > 1:
        assert len(got) == len(sizes)  # one batch per file
    assert _rows(got).equals(_select(frame).collect())


def test_a_file_without_the_columns_falls_back_to_one_query(tmp_path):
    frame = fingerprint_frame(Layout(tmp_path), 0, _write_pass(tmp_path, [5, 0, 7], 1))
    assert _rows(list(fingerprint_batches(frame, _select))).equals(_select(frame).collect())
    plain = pl.LazyFrame({SHARD: [0, 0], ROW: [1, 0], "empty": [False, False], "bands": [[1], [2]]})
    assert fingerprint_pieces(plain) == [plain]
    assert pl.concat(list(fingerprint_batches(plain, _select))).equals(_select(plain).collect())


def test_at_most_two_files_are_held_ahead_of_a_slow_consumer(tmp_path, monkeypatch):
    """Files collected when the consumer gets batch i: i + 1 (this one) and at most READ_AHEAD more,
    however long the consumer takes (the old streaming read had read every file by then)."""
    frame = fingerprint_frame(Layout(tmp_path), 0, _write_pass(tmp_path, [30] * 8, 2))
    collected = []
    real = pl.LazyFrame.collect

    def counting(self, *a, **k):
        out = real(self, *a, **k)
        collected.append(out.height)
        return out

    monkeypatch.setattr(pl.LazyFrame, "collect", counting)
    seen = []
    for i, _ in enumerate(fingerprint_batches(frame, _select)):
        threading.Event().wait(0.02)  # a slow consumer: the reader could run ahead here
        seen.append(len(collected) - (i + 1))
    assert len(seen) == 8 and max(seen) <= minhash.READ_AHEAD


def test_resolve_reads_bands_and_signatures_per_file(tmp_path, monkeypatch):
    """A MinHash run over several shards reads the fingerprints through ``fingerprint_batches``
    (once for the band keys, once for the signatures), and decides as a one-shard run does."""
    rng = np.random.default_rng(5)
    base = [" ".join(f"w{w}" for w in rng.integers(0, 5000, 60)) for _ in range(40)]
    docs = [{"id": str(i), "text": base[i % 40] + (" extra" if i >= 40 else "")} for i in range(80)]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    calls = []
    real = minhash.fingerprint_batches

    def spy(frame, select):
        calls.append(len(fingerprint_pieces(frame)))
        return real(frame, select)

    monkeypatch.setattr(minhash, "fingerprint_batches", spy)
    proc = [{"minhash_dedup": {"threshold": 0.8, "verify": "signature"}}]
    run_recipe([src], tmp_path / "many", proc, workers=1, input={"shard_size_mb": 0.004})
    assert len(calls) == 2 and calls[0] > 2
    run_recipe([src], tmp_path / "one", proc, workers=1)
    many, one = read_output(tmp_path / "many"), read_output(tmp_path / "one")
    assert many == one and len(one) == 40


def test_the_driver_trims_its_heap_after_each_resolve(tmp_path, monkeypatch):
    """Order of events in the driver: resolve, then the heap trimmed, then the next pass."""
    events = []
    monkeypatch.setattr(run_mod, "trim_heap", lambda: events.append("trim"))
    real = minhash.MinHashDedup.resolve
    monkeypatch.setattr(minhash.MinHashDedup, "resolve", lambda self, fp: (events.append("resolve"), real(self, fp))[1])
    docs = [{"id": str(i), "text": f"text number {i % 5} " * 12} for i in range(30)]
    run_recipe([write_jsonl(tmp_path / "d.jsonl", docs)], tmp_path / "o", [{"minhash_dedup": {}}], workers=1)
    assert events == ["resolve", "trim"]
