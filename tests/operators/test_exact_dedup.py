"""Exact dedup: normalisation options, 128-bit hashes, keep-first resolution."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from operators.dedup.exact import ExactDedup, hash128


def dedup_ids(texts, **params):
    op = ExactDedup(ExactDedup.Params(**params))
    fp = op.fingerprint(pa.table({"text": pa.array(texts, pa.string())}))
    fp = fp.append_column("__shard", pa.array([0] * len(texts), pa.int32()))
    fp = fp.append_column("__row", pa.array(range(len(texts)), pa.int64()))
    dropped = op.resolve(pl.from_arrow(fp).lazy())
    return sorted(dropped["__row"].to_list())


def test_hash_is_xxh3_128():
    hi, lo = hash128(pa.array(["abc"]))
    d = xxhash.xxh3_128_intdigest(b"abc")
    assert int(hi[0]) == d >> 64 and int(lo[0]) == d & (2**64 - 1)


def test_default_ignores_case_and_whitespace_not_punctuation():
    texts = ["Hello  World", "hello world", "hello world!", "ＨＥＬＬＯ world"]
    assert dedup_ids(texts) == [1, 3]  # NFKC folds the fullwidth letters


def test_options():
    texts = ["Hello World", "hello world", "Hello, World!"]
    assert dedup_ids(texts, lowercase=False) == []
    assert dedup_ids(texts, punctuation=True) == [1, 2]


@given(st.lists(st.sampled_from(["a", "b", "c", "A", "a ", "d"]), max_size=30))
def test_keeps_exactly_one_first_occurrence_per_group(texts):
    dropped = set(dedup_ids(texts))
    kept = [i for i in range(len(texts)) if i not in dropped]
    keys = [t.strip().lower() for t in texts]
    # independent computation: first index of each normalised key
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    assert kept == sorted(first.values())
