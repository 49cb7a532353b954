"""CSV and TSV input, streamed with ``pyarrow.csv.open_csv`` (one block of ``block_bytes`` at a time,
so memory stays bounded whatever the file's size).

- The first record is the header. Every column is read as text: CSV carries no types, and types
  guessed from a first block can fail on a later one, which would end the stream. An empty
  field is null (missing).
- Values may span lines inside quotes (``""`` is a quote inside a quoted value); TSV is read with
  the same quoting rules (pandas' and Python's ``csv`` defaults), tab-separated.
- A row with the wrong number of fields, or with bytes that are not UTF-8, goes to quarantine
  with the file, its row number and its text; the rest of the file is read.
- Row numbers count the header as row 1 and skip blank lines (pyarrow's numbering): the line
  number, for files without blank lines or values that span lines. Rows without an id get
  ``<file>:<row>``, stable like JSONL's ``<file>:<line>``.
- A file is one shard: a cut at a byte offset could fall inside a quoted value that spans lines.

Clean files are parsed by Arrow at C++ speed. pyarrow's ``invalid_row_handler`` would skip
malformed rows, but a streaming reader given a Python handler can abort the process at exit
(pyarrow 26 with polars loaded: "terminate called without an active exception"), so instead, at
the first row Arrow refuses, the rest of the file is read with Python's ``csv`` module, which
keeps every row and lets each bad one go to quarantine alone.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from thresher.pipeline import fs
from thresher.pipeline.errors import InputError
from thresher.pipeline.io.inputs import Shard, display_name, open_native

DELIMITERS = {"csv": ",", "tsv": "\t"}
RAW_SNIPPET = 2000


def _records(path: str, fmt: str) -> Iterator[list[str]]:
    """The file's non-blank records as lists of fields (Python's ``csv``; bytes that are not UTF-8
    kept as surrogate escapes, so the row can be told apart and sent to quarantine)."""
    csv.field_size_limit(sys.maxsize)  # the default (128 KiB) is far below a long document
    with fs.open_input(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        for fields in csv.reader(text, delimiter=DELIMITERS[fmt], quotechar='"', doublequote=True):
            if fields:  # a blank line: no record (as pyarrow skips it)
                yield fields


def header(path: str, fmt: str) -> list[str]:
    """The column names of a CSV/TSV file ([] for an empty file); names that repeat, are empty or
    are not UTF-8 are an ``InputError`` (they cannot become distinct columns)."""
    try:
        names = next(_records(path, fmt), [])
    except csv.Error as e:
        raise InputError(f"input file '{display_name(path)}' cannot be read as {fmt}: {e}") from None
    seen: set[str] = set()
    for i, n in enumerate(names):
        if not n.strip():
            raise InputError(f"input file '{display_name(path)}': column {i + 1} of the header has no name")
        if n in seen:
            raise InputError(f"input file '{display_name(path)}': the header names column '{n}' twice")
        try:
            n.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"input file '{display_name(path)}': header column {i + 1} is not UTF-8") from None
        seen.add(n)
    return names


def read_delimited(shard: Shard, text_key: str | None, id_key: str, block_bytes: int,
                   alt_text_keys: Iterable[str] = ()) -> Iterator:
    """Stream a CSV/TSV shard as ``ReadBatch``es (see the module docstring)."""
    from thresher.pipeline.io.readers import ReadBatch, _ensure_ids, split_missing_text

    names = header(shard.path, shard.format)
    if not names:
        return

    def finish(table: pa.Table, lines: np.ndarray, bad: list[dict], pos: int):
        table, lines, more = _decode(table, lines, shard)
        table, lines, missing = split_missing_text(table, lines, shard.rel, text_key, alt_text_keys)
        return ReadBatch(_ensure_ids(table, lines, shard.rel, id_key), bad + more + missing, lines=lines, pos=pos)

    next_row = 2  # the header is row 1
    batches = _arrow_batches(shard, names, block_bytes)
    while True:
        try:
            rb, pos = next(batches)
        except StopIteration:
            return
        except pa.ArrowInvalid:
            break  # a row Arrow refuses: the rest of the file, from the first row not yet read, in Python
        table = pa.Table.from_batches([rb])
        lines = np.arange(next_row, next_row + table.num_rows, dtype=np.int64)
        next_row += table.num_rows
        yield finish(table, lines, [], pos)
    yield from _read_python(shard, names, next_row, block_bytes, finish)


def _arrow_batches(shard: Shard, names: list[str], block_bytes: int) -> Iterator[tuple[pa.RecordBatch, int]]:
    """(batch, bytes read so far) from Arrow's streaming reader, every column as binary."""
    convert = pacsv.ConvertOptions(column_types={n: pa.binary() for n in names}, strings_can_be_null=True,
                                   null_values=[""], quoted_strings_can_be_null=True, check_utf8=False)
    parse = pacsv.ParseOptions(delimiter=DELIMITERS[shard.format], newlines_in_values=True)
    with open_native(shard.path) as raw:
        reader = pacsv.open_csv(raw, read_options=pacsv.ReadOptions(use_threads=False, block_size=max(block_bytes, 1 << 16)),
                                parse_options=parse, convert_options=convert)
        for rb in reader:
            yield rb, raw.tell()


def _read_python(shard: Shard, names: list[str], start: int, block_bytes: int, finish) -> Iterator:
    """Rows ``start`` on with Python's ``csv``: malformed rows to quarantine, the rest in batches."""
    from thresher.pipeline.io.readers import quarantine_record

    delim, n = DELIMITERS[shard.format], len(names)
    cols: list[list] = [[] for _ in names]
    lines: list[int] = []
    bad: list[dict] = []
    size = 0

    def batch():
        table = pa.table([pa.array(c, pa.binary()) for c in cols], names=names)
        out = finish(table, np.asarray(lines, dtype=np.int64), list(bad), shard.size)
        for c in cols:
            c.clear()
        lines.clear()
        bad.clear()
        return out

    records = enumerate(_records(shard.path, shard.format), start=1)
    row = 0
    while True:
        try:
            row, fields = next(records)
        except StopIteration:
            break
        except csv.Error as e:  # the file cannot be read on: its tail is one record, as a damaged gzip's is
            bad.append(quarantine_record(shard.rel, row + 1, f"malformed {shard.format.upper()}: {e}", "read", ""))
            break
        if row < start:  # the header, and rows Arrow read already
            continue
        if len(fields) != n:
            text = delim.join(fields).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            bad.append(quarantine_record(shard.rel, row, f"malformed {shard.format.upper()} row: expected {n} fields, "
                                                         f"got {len(fields)}", "read", text[:RAW_SNIPPET]))
            continue
        for c, v in zip(cols, fields, strict=True):
            c.append(v.encode("utf-8", "surrogateescape") if v else None)
        lines.append(row)
        size += sum(len(v) for v in fields) + n
        if size >= block_bytes:
            yield batch()
            size = 0
    if lines or bad:
        yield batch()


def _decode(table: pa.Table, lines: np.ndarray, shard: Shard) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """The binary columns as text; rows with bytes that are not UTF-8 go to quarantine."""
    from thresher.pipeline.io.readers import quarantine_record

    ok = np.ones(table.num_rows, dtype=bool)
    why: dict[int, str] = {}
    cols = []
    for name in table.column_names:
        col = table.column(name)
        try:
            cols.append(col.cast(pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        values = col.to_pylist()
        for i, v in enumerate(values):
            if v is None:
                continue
            try:
                v.decode("utf-8")
            except UnicodeDecodeError as e:
                if ok[i]:
                    why[i] = f"invalid UTF-8 in column '{name}' at byte {e.start}"
                ok[i] = False
        cols.append(pa.array([v.decode("utf-8", "replace") if v is not None else None for v in values], pa.string()))
    table = pa.table(cols, names=table.column_names)
    if ok.all():
        return table, lines, []
    delim = DELIMITERS[shard.format]
    bad = [quarantine_record(shard.rel, int(lines[i]), why[i], "read",
                             delim.join("" if v is None else v for v in table.slice(int(i), 1).to_pylist()[0].values())
                             [:RAW_SNIPPET])
           for i in np.flatnonzero(~ok)]
    return table.filter(pa.array(ok)), lines[ok], bad
