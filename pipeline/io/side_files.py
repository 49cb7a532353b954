"""Small files an op reads beside the corpus (a quality classifier's training examples, an
evaluation set to decontaminate against): read whole, as records, in any format thresher reads.

Formats: ``jsonl`` (also ``.gz`` / ``.zst``), ``json`` (one array of records), ``parquet`` and
``lines`` (one text per non-blank line, ``.txt``). ``auto`` goes by the name as inputs do (a
``.json`` file that does not start with ``[`` is JSON lines), with ``.txt`` for lines.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from thresher.pipeline.errors import ThresherError
from thresher.pipeline.io.inputs import detect_format, load_json_array

FORMATS = ("auto", "jsonl", "json", "lines", "parquet")


def side_file_format(path: str, declared: str = "auto") -> str:
    """The format of a side file: ``declared``, or what its name says (JSON lines when it says nothing)."""
    if declared != "auto":
        return declared
    name = path.lower()
    if name.endswith((".txt", ".txt.gz", ".txt.zst")):
        return "lines"
    fmt = detect_format(path) or "jsonl"
    if fmt not in ("json", "parquet") and not fmt.startswith("jsonl"):
        raise ThresherError(f"'{path}': a {fmt} file cannot be read here (give jsonl, json, parquet or txt)")
    return fmt.split(".")[0]


def read_side_file(path: str | Path, text_key: str, fmt: str = "auto", *, what: str = "file") -> list[dict]:
    """The records of a small side file (``lines``: ``{text_key: line}`` per non-blank line).
    A missing file is a ``ThresherError`` naming it as ``what`` (e.g. "evaluation set")."""
    path = str(path)
    if path.startswith("demo:"):
        from thresher.pipeline.demo import demo_path

        path = str(demo_path(path[5:]))
    if not Path(path).is_file():
        raise ThresherError(f"{what} '{path}' does not exist")
    fmt = side_file_format(path, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if fmt == "json" and not _compressed(path):
        return load_json_array(path)
    with _open_text(path) as f:
        if fmt == "json":
            return json.load(f)
        if fmt == "lines":
            return [{text_key: line} for line in f if line.strip()]
        return [json.loads(line) for line in f if line.strip()]


def _compressed(path: str) -> bool:
    return path.lower().endswith((".gz", ".zst"))


def _open_text(path: str):
    name = path.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".zst"):
        import zstandard

        return zstandard.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")
