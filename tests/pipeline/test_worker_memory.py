"""What a pool worker leaves out to stay small: pandas, which pyarrow would import only to ask
whether its input is a pandas object (``passes.skip_pandas_probe``). Each check runs in a fresh
interpreter, as a worker does."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import read_output, run_recipe, write_jsonl

CHECK = """
import sys, numpy as np, pyarrow as pa
from thresher.pipeline.executors.passes import skip_pandas_probe
{before}
skip_pandas_probe()
pa.table({{"a": np.arange(3)}}); pa.array([1.5, None]); pa.chunked_array([np.arange(2)])
print("pandas" in sys.modules)
import pandas as pd
t = pa.Table.from_pandas(pd.DataFrame({{"a": [1.0, None]}}))
assert t.column("a").null_count == 1 and t.to_pandas().shape == (2, 1)
assert pa.table(pd.DataFrame({{"x": [1, 2]}})).num_rows == 2 and pa.array(pd.Series([1.0, None])).null_count == 1
"""


@pytest.mark.parametrize("before,imported", [("", False), ("import ray", True)])
def test_pyarrow_leaves_pandas_unimported_until_asked(before, imported):
    pytest.importorskip("pandas")
    if before:
        pytest.importorskip("ray")
    out = subprocess.run([sys.executable, "-c", CHECK.format(before=before)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(imported)]


def test_workers_decide_the_same_without_pandas(tmp_path):
    docs = [{"id": str(i), "text": f"doc {i % 7} " * 20} for i in range(60)]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    proc = [{"exact_dedup": {}}, {"text_length_filter": {"min_chars": 5}}]
    run_recipe([src], tmp_path / "w2", proc, workers=2, input={"shard_size_mb": 0.002})
    run_recipe([src], tmp_path / "w1", proc, workers=1, input={"shard_size_mb": 0.002})
    assert read_output(tmp_path / "w1") == read_output(tmp_path / "w2") and len(read_output(tmp_path / "w1")) == 7
