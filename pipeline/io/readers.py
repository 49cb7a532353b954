"""Read a shard as a stream of Arrow batches, sending bad records to quarantine.

Fast path: a block of whole lines goes through ``pyarrow.json`` at C++ speed. Only a block
that fails (malformed JSON, invalid UTF-8, a type conflict) is re-read line by line in Python
to find the bad lines, so clean data never pays for the checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import xxhash

from pipeline.io.inputs import Shard, load_json_array

RAW_SNIPPET = 2000
_COMPRESSION = {"jsonl": None, "jsonl.gz": "gzip", "jsonl.zst": "zstd"}


@dataclass
class ReadBatch:
    table: pa.Table
    quarantined: list[dict] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)


def _kind(t: pa.DataType) -> str:
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_timestamp(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "array"
    if pa.types.is_struct(t):
        return "object"
    return str(t)


def _value_kind(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


class JsonlBlockParser:
    """Parses blocks of one file, keeping the file's schema so types stay consistent across blocks."""

    def __init__(self, rel: str, text_key: str | None):
        self.rel = rel
        self.text_key = text_key
        self.schema: pa.Schema | None = None  # known (non-null) field types of this file
        self.order: list[str] = []  # column order of the file (first appearance)

    def _parse_options(self) -> pajson.ParseOptions:
        fields = [f for f in (self.schema or []) if not pa.types.is_null(f.type)]
        if self.text_key and self.text_key not in [f.name for f in fields]:
            fields.append(pa.field(self.text_key, pa.string()))
        return pajson.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="infer")

    def _learn(self, table: pa.Table, block: bytes) -> pa.Table:
        """Remember the types seen; return the table with columns in the file's order."""
        if not self.order:
            first = next((ln for ln in block.split(b"\n", 64) if ln.strip()), b"{}")
            try:
                self.order = [k for k in json.loads(first) if isinstance(k, str)]
            except ValueError:
                self.order = []
        known = {f.name: f for f in self.schema} if self.schema is not None else {}
        for f in table.schema:
            if f.name not in known or pa.types.is_null(known[f.name].type):
                known[f.name] = f
            if f.name not in self.order:
                self.order.append(f.name)
        self.schema = pa.schema(list(known.values()))
        names = table.column_names
        ordered = [c for c in self.order if c in names]
        return table if ordered == names else table.select(ordered)

    def parse(self, block: bytes, first_line: int, nlines: int | None = None) -> tuple[pa.Table | None, np.ndarray, list[dict]]:
        """Returns (table, line numbers of its rows, quarantine records)."""
        try:
            table = pajson.read_json(pa.BufferReader(block), parse_options=self._parse_options(),
                                     read_options=pajson.ReadOptions(use_threads=False, block_size=max(len(block), 1 << 20) + 1))
            table.validate(full=True)  # pyarrow.json does not check UTF-8; this does, in C++
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return self._parse_slow(block, first_line)
        lines = _line_numbers(block, first_line, table.num_rows, nlines)
        return self._finish(table, lines, [], block)

    def _finish(self, table: pa.Table, lines: np.ndarray, bad: list[dict], block: bytes):
        """Quarantine rows without text, then learn the types of what is left."""
        table, lines, more = split_missing_text(table, lines, self.rel, self.text_key)
        return self._learn(table, block), lines, bad + more

    def _parse_slow(self, block: bytes, first_line: int) -> tuple[pa.Table | None, np.ndarray, list[dict]]:
        bad: list[dict] = []
        rows: list[dict] = []
        good_raw: list[bytes] = []
        good_lines: list[int] = []
        for i, raw in enumerate(block.split(b"\n")):
            line = first_line + i
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad.append(self._q(line, f"invalid UTF-8 at byte {e.start}", raw))
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                bad.append(self._q(line, f"malformed JSON: {e.msg} (column {e.colno})", raw))
                continue
            if not isinstance(obj, dict):
                bad.append(self._q(line, f"not a JSON object (got {_value_kind(obj)})", raw))
                continue
            rows.append(obj)
            good_raw.append(raw)
            good_lines.append(line)
        expected = self._expected_kinds(rows)
        keep_raw, keep_lines = [], []
        for obj, raw, line in zip(rows, good_raw, good_lines, strict=True):
            conflict = next(((k, expected[k], _value_kind(v)) for k, v in obj.items()
                             if v is not None and k in expected and _value_kind(v) != expected[k]), None)
            if conflict:
                k, want, got = conflict
                bad.append(self._q(line, f"field '{k}': expected {want}, got {got} (type conflicts with the rest of the file)", raw))
                continue
            keep_raw.append(raw)
            keep_lines.append(line)
        if not keep_raw:
            return None, np.zeros(0, dtype=np.int64), bad
        payload = b"\n".join(keep_raw) + b"\n"
        try:
            table = pajson.read_json(pa.BufferReader(payload), parse_options=self._parse_options(),
                                     read_options=pajson.ReadOptions(use_threads=False, block_size=len(payload) + 1))
        except pa.ArrowInvalid:
            # numbers that widen (int column, float value): let pyarrow infer this block alone
            table = pajson.read_json(pa.BufferReader(payload),
                                     read_options=pajson.ReadOptions(use_threads=False, block_size=len(payload) + 1))
        return self._finish(table, np.asarray(keep_lines, dtype=np.int64), bad, payload)

    def _expected_kinds(self, rows: list[dict]) -> dict[str, str]:
        """Field kinds: from the file's schema where known, else the kind of the field's first
        non-null value (the first record that has a field sets its type, as a schema would)."""
        expected = {f.name: _kind(f.type) for f in (self.schema or []) if not pa.types.is_null(f.type)}
        if self.text_key:
            expected[self.text_key] = "string"
        for obj in rows:
            for k, v in obj.items():
                if k not in expected and v is not None:
                    expected[k] = _value_kind(v)
        return expected

    def _q(self, line: int, reason: str, raw: bytes) -> dict:
        return quarantine_record(self.rel, line, reason, "read", raw.decode("utf-8", "replace")[:RAW_SNIPPET])


def quarantine_record(source: str, line: int, reason: str, stage: str, raw: str, row_id=None) -> dict:
    rec = {"source": source, "line": int(line), "stage": stage, "reason": reason, "raw": raw}
    if row_id is not None:
        rec["id"] = row_id
    return rec


def _line_numbers(block: bytes, first_line: int, nrows: int, nlines: int | None = None) -> np.ndarray:
    if nlines is None:
        nlines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    if nlines == nrows:
        return np.arange(first_line, first_line + nrows, dtype=np.int64)
    # blank lines were skipped by the parser: number only the non-blank ones
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines = lines[:-1]
    idx = np.fromiter((i for i, raw in enumerate(lines) if raw.strip()), dtype=np.int64)
    return first_line + idx[:nrows]


def iter_blocks(shard: Shard, block_bytes: int) -> Iterator[tuple[bytes, int, int]]:
    """Blocks of whole lines from a JSONL shard: (bytes, number of its first line, lines in it)."""
    comp = _COMPRESSION[shard.format]
    stream = pa.input_stream(shard.path, compression=comp) if comp else open(shard.path, "rb")  # noqa: SIM115
    with stream:
        remaining = None
        if comp is None:
            stream.seek(shard.start)
            end = shard.end if shard.end >= 0 else None
            remaining = None if end is None else end - shard.start
        line = shard.first_line
        carry = b""
        while True:
            want = block_bytes if remaining is None else min(block_bytes, remaining)
            chunk = stream.read(want) if want > 0 else b""
            if remaining is not None:
                remaining -= len(chunk)
            if not chunk:
                if carry:
                    yield carry, line, carry.count(b"\n") + 1
                return
            buf = carry + chunk if carry else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            block, carry = buf[: cut + 1], buf[cut + 1:]
            n = block.count(b"\n")
            yield block, line, n
            line += n


def iter_array_blocks(shard: Shard, block_bytes: int) -> Iterator[tuple[bytes, int, int]]:
    """A JSON array file as blocks of JSON lines, one per element, so the JSONL parser (and its
    quarantine) applies: a record's "line" is its 1-based position in the array."""
    items = load_json_array(shard.path, shard.rel)
    lines, size, first = [], 0, 1
    for i, item in enumerate(items):
        line = json.dumps(item, ensure_ascii=False).encode("utf-8")
        lines.append(line)
        size += len(line) + 1
        if size >= block_bytes:
            yield b"\n".join(lines) + b"\n", first, len(lines)
            first, lines, size = i + 2, [], 0
    if lines:
        yield b"\n".join(lines) + b"\n", first, len(lines)


def read_shard(shard: Shard, text_key: str | None, id_key: str, block_bytes: int) -> Iterator[ReadBatch]:
    """Stream a shard as batches with a text column checked and an id on every row."""
    if shard.format == "parquet":
        yield from _read_parquet(shard, text_key, id_key, block_bytes)
        return
    if shard.format == "warc":
        from pipeline.io.warc import read_warc

        for table, bad, counters in read_warc(shard, id_key):
            yield ReadBatch(table, bad, counters)
        return
    parser = JsonlBlockParser(shard.rel, text_key)
    blocks = iter_array_blocks(shard, block_bytes) if shard.format == "json" else iter_blocks(shard, block_bytes)
    for block, first_line, nlines in blocks:
        table, lines, bad = parser.parse(block, first_line, nlines)
        if table is None:
            yield ReadBatch(pa.table({}), bad)
            continue
        yield ReadBatch(_ensure_ids(table, lines, shard.rel, id_key), bad)


def _read_parquet(shard: Shard, text_key: str, id_key: str, block_bytes: int) -> Iterator[ReadBatch]:
    pf = pq.ParquetFile(shard.path)
    groups = list(range(shard.start, shard.end)) if shard.end >= 0 else None
    if groups == []:
        return
    md = pf.metadata
    nbytes = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    avg_row = max(64, nbytes // max(1, md.num_rows))  # uncompressed bytes per row
    rows_per_batch = max(256, block_bytes // avg_row)
    row = shard.first_line
    for rb in pf.iter_batches(batch_size=rows_per_batch, row_groups=groups):
        table = pa.Table.from_batches([rb])
        lines = np.arange(row, row + table.num_rows, dtype=np.int64)
        row += table.num_rows
        if text_key and text_key in table.column_names and not _is_string(table.schema.field(text_key).type):
            yield ReadBatch(pa.table({}), [quarantine_record(shard.rel, int(x), f"field '{text_key}': expected string, got {table.schema.field(text_key).type}", "read", "")
                                           for x in lines])
            continue
        table, lines, bad = split_missing_text(table, lines, shard.rel, text_key)
        yield ReadBatch(_ensure_ids(table, lines, shard.rel, id_key), bad)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def split_missing_text(table: pa.Table, lines: np.ndarray, rel: str, text_key: str | None
                       ) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """Rows with a missing or null text field go to quarantine. Columns that only those rows
    had are dropped, so bad records do not add all-null columns to the good ones. Data without a
    text column (``text_key`` None) passes through."""
    if not text_key:
        return table, lines, []

    def raw(t: pa.Table, i: int) -> str:
        return json.dumps(t.slice(i, 1).to_pylist()[0], ensure_ascii=False, default=str)[:RAW_SNIPPET]

    if text_key not in table.column_names:
        return (table.slice(0, 0), lines[:0],
                [quarantine_record(rel, int(x), f"missing text field '{text_key}'", "read", raw(table, i))
                 for i, x in enumerate(lines)])
    text = table.column(text_key)
    if not text.null_count:
        return table, lines, []
    null = pc.is_null(text).to_numpy(zero_copy_only=False)
    removed = table.filter(pa.array(null))
    bad = [quarantine_record(rel, int(lines[i]), f"missing or null text field '{text_key}'", "read", raw(removed, j))
           for j, i in enumerate(np.flatnonzero(null))]
    kept = table.filter(pa.array(~null))
    only_bad = [c for c in kept.column_names
                if c != text_key and kept.column(c).null_count == kept.num_rows and removed.column(c).null_count < removed.num_rows]
    if only_bad:
        kept = kept.drop_columns(only_bad)
    return kept, lines[~null], bad


def _ensure_ids(table: pa.Table, lines: np.ndarray, rel: str, id_key: str) -> pa.Table:
    """Keep input ids; give rows without one a stable id from source file and line."""
    if id_key in table.column_names:
        col = table.column(id_key)
        if col.null_count == 0:
            return table
        if pa.types.is_null(col.type):
            return table.set_column(table.column_names.index(id_key), id_key, _derived_ids(lines, rel, pa.string()))
        derived = _derived_ids(lines, rel, col.type)
        filled = pc.if_else(pc.is_null(col), derived, col)
        return table.set_column(table.column_names.index(id_key), id_key, filled)
    return table.append_column(id_key, _derived_ids(lines, rel, pa.string()))


def _derived_ids(lines: np.ndarray, rel: str, typ: pa.DataType) -> pa.Array:
    if pa.types.is_integer(typ):
        # integer id column: a 63-bit hash of "source:line", so ids stay integers
        vals = [xxhash.xxh3_64_intdigest(f"{rel}:{int(x)}".encode()) & 0x7FFFFFFFFFFFFFFF for x in lines]
        return pa.array(vals, type=typ)
    ids = pc.binary_join_element_wise(pa.scalar(f"{rel}:"), pc.cast(pa.array(lines), pa.string()), "")
    return ids.cast(typ) if not pa.types.is_null(typ) else ids
