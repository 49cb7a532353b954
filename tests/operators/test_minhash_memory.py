"""The MinHash resolve's memory-bounded parts (issue 19 item 3) against plain definitions:
``SignatureWindow`` (signatures read once in batches, held only while a pair of theirs is open)
decides every candidate pair as the share of equal signature values, whatever the batch split
and order; read in input order with near pairs, it holds a window of rows, not the corpus; the
spilled band-key records (``_spill`` + ``bucket_edges_of``) give the edges of one in-memory sort."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.operators.dedup.minhash import _BAND_ROW, SignatureWindow, _spill, bucket_edges, bucket_edges_of


def _pairs(rng, n_rows: int, n_pairs: int, span: int):
    s = rng.integers(0, n_rows, n_pairs)
    d = np.minimum(s + rng.integers(1, span + 1, n_pairs), n_rows - 1)
    ok = s < d
    pairs = np.unique(np.stack([s[ok], d[ok]], 1), axis=0)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


@settings(max_examples=60, deadline=None)
@given(n_rows=st.integers(2, 400), n_pairs=st.integers(1, 300), span=st.integers(1, 400), perm=st.sampled_from([8, 16]),
       batch=st.integers(1, 97), shuffle=st.booleans(), missing=st.integers(0, 20), seed=st.integers(0, 2**32 - 1))
def test_signature_window_decides_as_the_definition(n_rows, n_pairs, span, perm, batch, shuffle, missing, seed):
    rng = np.random.default_rng(seed)
    src, dst = _pairs(rng, n_rows, n_pairs, span)
    gids = np.arange(n_rows, dtype=np.int64) * 7 - 30  # gaps and negative gids (a saved index)
    src, dst = gids[src], gids[dst]
    sig = rng.integers(0, 4, (n_rows, perm), dtype=np.uint32)  # few values: similarities spread over [0, 1]
    threshold = 0.4
    absent = set(rng.choice(gids, min(missing, n_rows), replace=False).tolist())  # never read: trusted
    order = rng.permutation(n_rows) if shuffle else np.arange(n_rows)
    order = np.array([i for i in order if gids[i] not in absent], dtype=np.int64)
    win = SignatureWindow(src, dst, perm, threshold)
    for lo in range(0, len(order), batch):
        rows = order[lo:lo + batch]
        win.add(gids[rows], pl.Series("sig", sig[rows]).cast(pl.Array(pl.UInt32, perm)))
    row_of = {g: i for i, g in enumerate(gids.tolist())}
    for k, (s, d) in enumerate(zip(src.tolist(), dst.tolist(), strict=True)):
        if s in absent or d in absent:
            assert win.keep[k]
        else:
            expected = (sig[row_of[s]] == sig[row_of[d]]).mean() >= threshold
            assert win.keep[k] == expected, (s, d)
    assert not win.free.size or len(set(win.free.tolist())) == len(win.free)  # a slot is never freed twice


def test_signature_window_holds_a_window_not_the_corpus():
    """100,000 rows, every row on a pair with a row at most 50 after it, read in order in batches
    of 1,000: the rows held at once stay near (batch + span) x 2, not the 100,000 on a pair."""
    rng = np.random.default_rng(3)
    n, span, batch = 100_000, 50, 1_000
    src = np.arange(n - span, dtype=np.int64)
    dst = src + rng.integers(1, span + 1, len(src))
    sig = rng.integers(0, 2, (n, 8), dtype=np.uint32)
    win = SignatureWindow(src, dst, 8, 0.5)
    for lo in range(0, n, batch):
        win.add(np.arange(lo, lo + batch, dtype=np.int64), pl.Series("sig", sig[lo:lo + batch]).cast(pl.Array(pl.UInt32, 8)))
    assert win.peak_held <= 2 * (batch + span)
    assert win.keep.tolist() == ((sig[src] == sig[dst]).mean(axis=1) >= 0.5).tolist()


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), bands=st.integers(1, 4), keys=st.integers(1, 60), parts=st.integers(1, 7),
       all_pairs=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_spilled_records_give_the_edges_of_one_sort(tmp_path_factory, n, bands, keys, parts, all_pairs, seed):
    rng = np.random.default_rng(seed)
    rec = np.empty(n * bands, _BAND_ROW)
    rec["gid"] = np.repeat(rng.permutation(n * 3)[:n].astype(np.int64) - 40, bands)
    rec["band"] = np.tile(np.arange(bands, dtype=np.uint16), n)
    rec["key"] = rng.integers(0, keys, n * bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    whole = bucket_edges(pl.DataFrame({"gid": rec["gid"], "band": rec["band"].astype(np.int32), "key": rec["key"]}),
                         all_pairs)
    tmp = tmp_path_factory.mktemp("spill")
    files = [tmp / f"p{i}.bin" for i in range(parts)]
    sinks = [open(f, "ab") for f in files]  # noqa: SIM115
    for lo in range(0, len(rec), 37):  # several appends per file
        _spill(rec[lo:lo + 37], sinks)
    for f in sinks:
        f.close()
    got = pl.concat([bucket_edges_of(np.fromfile(f, _BAND_ROW), all_pairs) for f in files]).unique().sort(["s", "d"])
    assert got.equals(whole.sort(["s", "d"]))
    assert sum(len(np.fromfile(f, _BAND_ROW)) for f in files) == len(rec)
