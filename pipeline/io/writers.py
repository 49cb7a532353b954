"""Write output shards atomically: temp files first, renamed into place only on commit.

File names depend only on the shard index and a sequence number, so the output layout is the
same whatever the number of workers: ``part-SSSSS-NNN.EXT``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

_EXT = {"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "jsonl.zst": ".jsonl.zst", "parquet": ".parquet"}
_COMP = {"jsonl": None, "jsonl.gz": "gzip", "jsonl.zst": "zstd"}
TMP_SUFFIX = ".tmp"


def shard_prefix(shard: int) -> str:
    return f"part-{shard:05d}-"


class ShardWriter:
    """Writes one shard's rows into ``part-SSSSS-NNN`` files of at most ``rows_per_file`` rows."""

    def __init__(self, out_dir: str | os.PathLike, shard: int, fmt: str, rows_per_file: int, prefix: str | None = None):
        self.dir = Path(out_dir)
        self.shard = shard
        self.prefix = prefix or shard_prefix(shard)
        self.fmt = fmt
        self.rows_per_file = rows_per_file
        self.seq = 0
        self.rows_in_file = 0
        self.rows = 0
        self._sink = None  # open stream or ParquetWriter
        self._schema: pa.Schema | None = None
        self.tmp_paths: list[Path] = []

    def _final(self, tmp: Path) -> Path:
        return tmp.with_name(tmp.name[: -len(TMP_SUFFIX)])

    def _open(self, schema: pa.Schema) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"{self.prefix}{self.seq:03d}{_EXT[self.fmt]}{TMP_SUFFIX}"
        self.seq += 1
        self.tmp_paths.append(tmp)
        self.rows_in_file = 0
        self._schema = schema
        if self.fmt == "parquet":
            self._sink = pq.ParquetWriter(str(tmp), schema, compression="zstd")
        else:
            comp = _COMP[self.fmt]
            self._sink = pa.output_stream(str(tmp), compression=comp) if comp else open(tmp, "wb")  # noqa: SIM115

    def _close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def write(self, table: pa.Table) -> None:
        start = 0
        while start < table.num_rows:
            if self._sink is not None and self.fmt == "parquet" and not table.schema.equals(self._schema):
                self._close()  # schema changed: a new file keeps each file self-consistent
            if self._sink is None or self.rows_in_file >= self.rows_per_file:
                self._close()
                self._open(table.schema)
            n = min(table.num_rows - start, self.rows_per_file - self.rows_in_file)
            part = table.slice(start, n)
            if self.fmt == "parquet":
                self._sink.write_table(part)
            else:
                write_jsonl(part, self._sink)
            self.rows_in_file += n
            self.rows += n
            start += n

    def commit(self) -> list[Path]:
        """Close and move every temp file into place. Returns the final paths."""
        self._close()
        finals = []
        for tmp in self.tmp_paths:
            final = self._final(tmp)
            os.replace(tmp, final)
            finals.append(final)
        return finals

    def abort(self) -> None:
        self._close()
        for tmp in self.tmp_paths:
            tmp.unlink(missing_ok=True)


def write_jsonl(table: pa.Table, sink) -> None:
    """One JSON object per line, through polars' native writer (no per-row Python)."""
    if table.num_rows == 0:
        return
    pl.from_arrow(table, rechunk=False).write_ndjson(sink)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, ensure_ascii=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """``data`` at ``path`` durably: temp file, fsync, rename (readers never see a partial file)."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_jsonl_records_atomic(path: str | os.PathLike, records: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, default=str))
            f.write("\n")
    os.replace(tmp, path)
