"""Read a shard as a stream of Arrow batches, sending bad records to quarantine.

Fast path: a block of whole lines goes through ``pyarrow.json`` at C++ speed. Only a block
that fails (malformed JSON, invalid UTF-8, a type conflict) is re-read line by line in Python
to find the bad lines, so clean data never pays for the checks. Likewise a compressed file is
decompressed by Arrow; only one that turns out truncated or corrupt is decoded again in Python,
to keep every whole line before the damage and quarantine the rest.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
import xxhash

from thresher.pipeline import fs
from thresher.pipeline.columns import set_column
from thresher.pipeline.io.inputs import Shard, load_json_array, open_native

RAW_SNIPPET = 2000
_COMPRESSION = {"jsonl": None, "jsonl.gz": "gzip", "jsonl.zst": "zstd"}
_SALVAGE_STEP = 64 << 10  # compressed bytes per Python decoder call when salvaging a damaged file


@dataclass
class ReadBatch:
    table: pa.Table
    quarantined: list[dict] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    lines: np.ndarray | None = None  # the input line (row, for Parquet) of each row, where known
    pos: int = -1  # bytes of the shard consumed so far (compressed bytes of a compressed file), -1: unknown


class ReadPos:
    """Where a reader is in its shard, in bytes (see ``ReadBatch.pos``), for progress."""

    __slots__ = ("bytes",)

    def __init__(self):
        self.bytes = 0


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

    def __init__(self, rel: str, text_key: str | None, alt_text_keys: Iterable[str] = ()):
        self.rel = rel
        self.text_key = text_key
        self.alt_text_keys = tuple(alt_text_keys)
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
        table, lines, more = split_missing_text(table, lines, self.rel, self.text_key, self.alt_text_keys)
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
                obj = json.loads(text, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as e:
                bad.append(self._q(line, f"malformed JSON: {e.msg} (column {e.colno})", raw))
                continue
            except _DuplicateKey as e:
                bad.append(self._q(line, f"malformed JSON: duplicate key '{e.key}'", raw))
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
        table, payload = self._read_accepted(keep_raw, keep_lines, bad)
        if table is None:
            return None, np.zeros(0, dtype=np.int64), bad
        return self._finish(table, np.asarray(keep_lines, dtype=np.int64), bad, payload)

    def _read_accepted(self, raws: list[bytes], lines: list[int], bad: list[dict]) -> tuple[pa.Table | None, bytes]:
        """pyarrow reads the lines Python accepted. A line it still rejects (where the two parsers
        differ: a number beyond a double, an unpaired surrogate escape) goes to quarantine with
        pyarrow's message, found by the row number in it, so it cannot abort the run; ``raws`` and
        ``lines`` lose it in place."""
        while raws:
            payload = b"\n".join(raws) + b"\n"
            opts = pajson.ReadOptions(use_threads=False, block_size=len(payload) + 1)
            try:
                try:
                    return pajson.read_json(pa.BufferReader(payload), parse_options=self._parse_options(),
                                            read_options=opts), payload
                except pa.ArrowInvalid:
                    # numbers that widen (int column, float value): let pyarrow infer this block alone
                    return pajson.read_json(pa.BufferReader(payload), read_options=opts), payload
            except pa.ArrowInvalid as e:
                m = _ARROW_ROW.search(str(e))
                if m is None or int(m.group(2)) >= len(raws):
                    raise
                i = int(m.group(2))
                bad.append(self._q(lines[i], f"malformed JSON: {m.group(1)}", raws[i]))
                del raws[i], lines[i]
        return None, b""

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


_ARROW_ROW = re.compile(r"(?:JSON parse error: )?(.*?)\.? in row (\d+)")


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json ``object_pairs_hook``: Python keeps the last of repeated keys, pyarrow refuses the line,
    so a repeated key is a bad record here too."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


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


class StreamCut(Exception):  # noqa: N818 - an event of reading, not a failure of the program
    """A compressed input ends early or is corrupt. ``iter_blocks`` raises it after yielding every
    whole line before the damage; ``line`` is where the lost tail starts, ``raw`` its partial line."""

    def __init__(self, line: int, reason: str, raw: bytes):
        super().__init__(reason)
        self.line, self.reason, self.raw = line, reason, raw


def iter_blocks(shard: Shard, block_bytes: int, pos: ReadPos | None = None) -> Iterator[tuple[bytes, int, int]]:
    """Blocks of whole lines from a JSONL shard: (bytes-like, number of its first line, lines in it).
    Raises ``StreamCut`` after the last whole line of a truncated or corrupt compressed file.
    ``pos`` follows the bytes consumed: of the blocks yielded (plain), of the compressed file read.
    Only the block yielded is held while the caller parses it (no chunk or carry copies beside it):
    a worker's memory is a few blocks, so these copies were a third of it."""
    comp = _COMPRESSION[shard.format]
    pos = pos if pos is not None else ReadPos()
    line = shard.first_line
    if not comp:
        for block in _plain_blocks(shard, block_bytes):
            n = block.count(b"\n") + (not block.endswith(b"\n"))
            pos.bytes += len(block)
            yield block, line, n
            line += n
            del block
        return
    carry = b""
    try:
        for chunk in _decompressed_chunks(shard, comp, block_bytes, pos):
            buf = carry + chunk if carry else chunk
            del chunk
            cut = buf.rfind(b"\n")
            if cut < 0:
                carry = buf
                continue
            block, carry = buf[: cut + 1], buf[cut + 1:]
            del buf
            n = block.count(b"\n")
            yield block, line, n
            line += n
            del block
    except _Damaged as e:
        raise StreamCut(line, e.reason, carry) from None
    if carry:
        yield carry, line, carry.count(b"\n") + 1


def _plain_blocks(shard: Shard, block_bytes: int) -> Iterator[bytearray]:
    """Whole lines of a plain shard, about ``block_bytes`` at a time: each block is read in place
    and completed to the end of its line (no copy; a shard's range ends at the end of a line, so the
    last block does too, except for a file's last line without a newline). One buffer serves every
    block of the shard: a block is valid until the next is asked for (the JSON parser copies what it
    keeps). A fresh buffer per block was a fresh mapping in a worker (a block is over its allocator's
    mmap threshold, pipeline/executors/local.py), zero-filled and page-faulted in block after block
    (docs/benchmarks.md, "Sixth step, time")."""
    with fs.open_input(shard.path) as f:  # the builtin open for a local file; ranged reads for a URL
        f.seek(shard.start)
        remaining = None if shard.end < 0 else shard.end - shard.start
        buf = bytearray()
        while True:
            want = block_bytes if remaining is None else min(block_bytes, remaining)
            if want <= 0:
                return
            if len(buf) > want:
                del buf[want:]
            elif len(buf) < want:
                buf.extend(bytes(want - len(buf)))
            got = f.readinto(buf)
            if not got:
                return
            if got < want:
                del buf[got:]
            if remaining is not None:
                remaining -= got
            if buf[-1] != 10 and (remaining is None or remaining > 0):  # 10: b"\n"
                tail = _readline(f, remaining)
                buf += tail
                if remaining is not None:
                    remaining -= len(tail)
            yield buf


def _readline(f, limit: int | None) -> bytes:
    """The rest of the current line, at most ``limit`` bytes. fsspec's files take no size argument
    to ``readline`` (an object store's shard ends at a line end, so the cut only guards a bad range)."""
    if limit is None:
        return f.readline()
    try:
        return f.readline(limit)
    except TypeError:
        return f.readline()[:limit]


class _Damaged(Exception):  # noqa: N818
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _decompressed_chunks(shard: Shard, comp: str, block_bytes: int, pos: ReadPos) -> Iterator[bytes]:
    """Arrow's decoder at C++ speed. When it fails, what it had decoded in the failing read is
    lost, so the file is decoded again from the start with Python's decoders in small steps, which
    give every byte before the damage; only this rare path pays for that."""
    done = 0
    try:
        raw = open_native(shard.path)
        with pa.input_stream(raw, compression=comp) as stream:
            while chunk := stream.read(block_bytes):
                done += len(chunk)
                pos.bytes = raw.tell()
                yield chunk
        return
    except OSError:
        pass  # truncated or corrupt: salvage below (the reason comes from the Python decoder)
    yield from _salvage(shard.path, comp, done, block_bytes)
    pos.bytes = shard.size


def _decoder(comp: str):
    if comp == "gzip":
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


def _salvage(path: str, comp: str, skip: int, block_bytes: int) -> Iterator[bytes]:
    """The decompressed bytes after offset ``skip`` that decode before the damage, in pieces of
    about ``block_bytes``; then ``_Damaged`` with the reason (or a clean end, if Python's decoder
    reads the whole file). Members (gzip) or frames (zstd) written one after another are all read.

    A decoder call that fails discards what it decoded, so the member is decoded again up to the
    failing step and that step is fed byte by byte: every byte before the damage is kept."""
    import zstandard

    errors = (zlib.error, zstandard.ZstdError)
    out_pos = 0  # decompressed bytes decoded so far
    pending: list[bytes] = []
    pending_size = 0

    def take(out: bytes) -> None:
        nonlocal out_pos, pending_size
        if out_pos + len(out) > skip:
            piece = out[max(0, skip - out_pos):]
            pending.append(piece)
            pending_size += len(piece)
        out_pos += len(out)

    damage = None
    with fs.open_input(path) as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        start = 0  # file offset of the current member
        while damage is None and start < size:
            dec, off = _decoder(comp), start
            f.seek(start)
            while not dec.eof and (raw := f.read(_SALVAGE_STEP)):
                try:
                    out = dec.decompress(raw)
                except errors:
                    dec = _decoder(comp)  # again, quietly, up to this step (its output was taken already)
                    f.seek(start)
                    while (left := off - f.tell()) > 0:
                        dec.decompress(f.read(min(_SALVAGE_STEP, left)))
                    for i in range(len(raw)):
                        try:
                            take(dec.decompress(raw[i:i + 1]))
                        except errors as e:
                            damage = f"corrupt compressed stream: {comp}: {e} (after {out_pos} bytes of data)"
                            break
                    break
                take(out)
                off += len(raw)
                if pending_size >= block_bytes:
                    yield b"".join(pending)
                    pending.clear()
                    pending_size = 0
            if damage is None and not dec.eof:
                damage = (f"truncated compressed stream: the {comp} data ends without its end marker "
                          f"(the file was cut short after {out_pos} bytes of data)")
            start = off - len(dec.unused_data)  # the next member, if any
    if pending:
        yield b"".join(pending)
    if damage is not None:
        raise _Damaged(damage)


def iter_array_blocks(shard: Shard, block_bytes: int, pos: ReadPos | None = None) -> Iterator[tuple[bytes, int, int]]:
    """A JSON array file as blocks of JSON lines, one per element, so the JSONL parser (and its
    quarantine) applies: a record's "line" is its 1-based position in the array. ``pos``: the
    file's bytes in proportion to the elements yielded (it is parsed whole)."""
    items = load_json_array(shard.path, shard.rel)
    pos = pos if pos is not None else ReadPos()
    lines, size, first = [], 0, 1
    for i, item in enumerate(items):
        line = json.dumps(item, ensure_ascii=False).encode("utf-8")
        lines.append(line)
        size += len(line) + 1
        if size >= block_bytes:
            pos.bytes = shard.size * (i + 1) // len(items)
            yield b"\n".join(lines) + b"\n", first, len(lines)
            first, lines, size = i + 2, [], 0
    if lines:
        pos.bytes = shard.size
        yield b"\n".join(lines) + b"\n", first, len(lines)


def text_source_columns(ops: Iterable) -> tuple[str, ...]:
    """Columns the first ops fill the text from (``html_extract``'s html): a row that has one of
    them needs no text of its own. Only ops before the first one that reads the text count."""
    cols: list[str] = []
    for op in ops:
        if hasattr(op, "text_source_columns"):
            cols += [c for c in op.text_source_columns if c not in cols]
        elif getattr(op, "reads_text", True):
            break
    return tuple(cols)


def read_shard(shard: Shard, text_key: str | None, id_key: str, block_bytes: int,
               alt_text_keys: Iterable[str] = ()) -> Iterator[ReadBatch]:
    """Stream a shard as batches with a text column checked and an id on every row. Rows without
    text are valid when one of ``alt_text_keys`` is set (the ops make the text from it)."""
    if shard.format == "parquet":
        yield from _read_parquet(shard, text_key, id_key, block_bytes, tuple(alt_text_keys))
        return
    if shard.format in ("csv", "tsv"):
        from thresher.pipeline.io.delimited import read_delimited

        yield from read_delimited(shard, text_key, id_key, block_bytes, alt_text_keys)
        return
    if shard.format == "warc":
        from thresher.pipeline.io.warc import read_warc

        for table, bad, counters, at in read_warc(shard, id_key):
            yield ReadBatch(table, bad, counters, pos=at)
        return
    parser = JsonlBlockParser(shard.rel, text_key, alt_text_keys)
    pos = ReadPos()
    blocks = (iter_array_blocks(shard, block_bytes, pos) if shard.format == "json"
              else iter_blocks(shard, block_bytes, pos))
    try:
        for block, first_line, nlines in blocks:
            table, lines, bad = parser.parse(block, first_line, nlines)
            if table is None:
                yield ReadBatch(pa.table({}), bad, pos=pos.bytes)
                continue
            yield ReadBatch(_ensure_ids(table, lines, shard.rel, id_key), bad, lines=lines, pos=pos.bytes)
    except StreamCut as cut:  # the lost tail of a damaged compressed file: one record, counted like any other
        raw = cut.raw[:RAW_SNIPPET].decode("utf-8", "replace")
        yield ReadBatch(pa.table({}), [quarantine_record(shard.rel, cut.line, cut.reason, "read", raw)], pos=shard.size)


def _read_parquet(shard: Shard, text_key: str, id_key: str, block_bytes: int,
                  alt_text_keys: tuple[str, ...] = ()) -> Iterator[ReadBatch]:
    with open_native(shard.path) as f:
        yield from _read_parquet_file(pq.ParquetFile(f), shard, text_key, id_key, block_bytes, alt_text_keys)


def _read_parquet_file(pf: pq.ParquetFile, shard: Shard, text_key: str, id_key: str, block_bytes: int,
                       alt_text_keys: tuple[str, ...]) -> Iterator[ReadBatch]:
    groups = list(range(shard.start, shard.end)) if shard.end >= 0 else None
    if groups == []:
        return
    md = pf.metadata
    nbytes = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    avg_row = max(64, nbytes // max(1, md.num_rows))  # uncompressed bytes per row
    rows_per_batch = max(256, block_bytes // avg_row)
    row = shard.first_line
    shard_rows = max(1, sum(md.row_group(i).num_rows for i in (groups if groups is not None else range(md.num_row_groups))))
    for rb in pf.iter_batches(batch_size=rows_per_batch, row_groups=groups):
        table = pa.Table.from_batches([rb])
        lines = np.arange(row, row + table.num_rows, dtype=np.int64)
        row += table.num_rows
        at = shard.size * min(shard_rows, row - shard.first_line) // shard_rows  # bytes in proportion to rows
        if text_key and text_key in table.column_names and not _is_string(table.schema.field(text_key).type):
            yield ReadBatch(pa.table({}), [quarantine_record(shard.rel, int(x), f"field '{text_key}': expected string, got {table.schema.field(text_key).type}", "read", "")
                                           for x in lines], pos=at)
            continue
        table, lines, bad = split_missing_text(table, lines, shard.rel, text_key, alt_text_keys)
        yield ReadBatch(_ensure_ids(table, lines, shard.rel, id_key), bad, lines=lines, pos=at)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def split_missing_text(table: pa.Table, lines: np.ndarray, rel: str, text_key: str | None,
                       alt_text_keys: Iterable[str] = ()) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """Rows with a missing or null text field go to quarantine, unless one of ``alt_text_keys``
    (a column the recipe's first ops make the text from, e.g. html) is set in that row. Columns
    that only the quarantined rows had are dropped, so bad records do not add all-null columns to
    the good ones. Data without a text column (``text_key`` None) passes through."""
    if not text_key:
        return table, lines, []

    def raw(t: pa.Table, i: int) -> str:
        return json.dumps(t.slice(i, 1).to_pylist()[0], ensure_ascii=False, default=str)[:RAW_SNIPPET]

    has_text = text_key in table.column_names
    text = table.column(text_key) if has_text else None
    if has_text and not text.null_count:
        return table, lines, []
    alts = [c for c in alt_text_keys if c in table.column_names and c != text_key]
    if not has_text and not alts:
        return (table.slice(0, 0), lines[:0],
                [quarantine_record(rel, int(x), f"missing text field '{text_key}'", "read", raw(table, i))
                 for i, x in enumerate(lines)])
    null = pc.is_null(text).to_numpy(zero_copy_only=False) if has_text else np.ones(table.num_rows, dtype=bool)
    for c in alts:  # the text will be made from this column: rows that have it are fine
        null = null & pc.is_null(table.column(c)).to_numpy(zero_copy_only=False)
    if not null.any():
        return table, lines, []
    reason = f"missing or null text field '{text_key}'" if has_text else f"missing text field '{text_key}'"
    removed = table.filter(pa.array(null))
    bad = [quarantine_record(rel, int(lines[i]), reason, "read", raw(removed, j))
           for j, i in enumerate(np.flatnonzero(null))]
    kept = table.filter(pa.array(~null))
    only_bad = [c for c in kept.column_names
                if c != text_key and kept.column(c).null_count == kept.num_rows and removed.column(c).null_count < removed.num_rows]
    if only_bad:
        kept = kept.drop_columns(only_bad)
    return kept, lines[~null], bad


def _ensure_ids(table: pa.Table, lines: np.ndarray, rel: str, id_key: str) -> pa.Table:
    """Keep input ids; give rows without one a stable id from source file and line."""
    col = table.column(id_key) if id_key in table.column_names else None
    if col is not None and col.null_count == 0:
        return table
    if col is None or pa.types.is_null(col.type):
        return set_column(table, id_key, _derived_ids(lines, rel, pa.string()))
    return set_column(table, id_key, pc.if_else(pc.is_null(col), _derived_ids(lines, rel, col.type), col))


def _derived_ids(lines: np.ndarray, rel: str, typ: pa.DataType) -> pa.Array:
    if pa.types.is_integer(typ):
        # integer id column: a 63-bit hash of "source:line", so ids stay integers
        vals = [xxhash.xxh3_64_intdigest(f"{rel}:{int(x)}".encode()) & 0x7FFFFFFFFFFFFFFF for x in lines]
        return pa.array(vals, type=typ)
    ids = pc.binary_join_element_wise(pa.scalar(f"{rel}:"), pc.cast(pa.array(lines), pa.string()), "")
    return ids.cast(typ) if not pa.types.is_null(typ) else ids
