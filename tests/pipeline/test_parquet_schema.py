"""Every Parquet part of an output has one schema, so the whole ``data/`` directory loads as one
table — ``polars.read_parquet(dir)``, ``pyarrow.dataset`` and ``datasets.load_dataset("parquet",
data_files=OUT/data/*.parquet)`` all refuse parts whose schemas differ."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from tests.conftest import read_output, run_recipe, write_jsonl


def _inputs(tmp_path):
    """Three files the reader types differently: extra fields, an all-null column, int vs float."""
    a = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"a{i}", "text": f"alpha doc {i}", "score": i,
                                                   "lang": "en"} for i in range(5)])
    b = write_jsonl(tmp_path / "in" / "b.jsonl", [{"id": f"b{i}", "text": f"beta doc {i}", "score": i + 0.5,
                                                   "meta": {"url": f"u{i}"}, "lang": None} for i in range(5)])
    c = write_jsonl(tmp_path / "in" / "c.jsonl", [{"id": f"c{i}", "text": f"gamma doc {i}"} for i in range(5)])
    return [a, b, c]


def test_parquet_parts_share_one_schema(tmp_path):
    out = tmp_path / "out"
    run_recipe(_inputs(tmp_path), out, fmt="parquet")
    parts = sorted((out / "data").glob("*.parquet"))
    assert len(parts) == 3
    schemas = [pq.read_schema(p).remove_metadata() for p in parts]
    assert all(s.equals(schemas[0]) for s in schemas), schemas
    assert schemas[0].field("score").type == pa.float64()
    df = pl.read_parquet(str(out / "data" / "*.parquet"))  # what failed before: differing schemas
    assert df.height == 15 and set(df.columns) >= {"id", "text", "score", "meta", "lang"}
    table = pads.dataset(str(out / "data"), format="parquet").to_table()
    assert table.num_rows == 15
    rows = {r["id"]: r for r in read_output(out)}
    assert rows["a1"]["score"] == 1.0 and rows["b1"]["meta"] == {"url": "u1"} and rows["c1"]["meta"] is None


def test_unify_leaves_irreconcilable_parts_alone(tmp_path):
    from thresher.pipeline.io.unify import unify_parquet_parts

    pq.write_table(pa.table({"x": ["a"]}), tmp_path / "p1.parquet")
    pq.write_table(pa.table({"x": [[1, 2]]}), tmp_path / "p2.parquet")
    import pytest

    with pytest.warns(RuntimeWarning, match="differing schemas"):
        assert unify_parquet_parts(tmp_path, ["p1.parquet", "p2.parquet"]) == 0
    assert pq.read_table(tmp_path / "p2.parquet").column("x").to_pylist() == [[1, 2]]


def test_datasets_loads_the_output(tmp_path, monkeypatch):
    """The documented one-liner, where ``datasets`` is installed (offline: nothing is downloaded)."""
    import pytest

    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    run_recipe(_inputs(tmp_path), out, fmt="parquet")
    ds = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == 15 and sorted(ds["id"]) == sorted(r["id"] for r in read_output(out))
