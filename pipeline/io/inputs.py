"""Resolve recipe input paths to files and split them into shards.

A shard is the unit of work and of resume: a whole file, a byte range of a big plain JSONL
file (split on line boundaries into shards of about equal size, with the line number each starts
at), or a run of Parquet row groups. Sharding depends only on the input and ``shard_size_mb``, never on the worker count,
so the output layout is the same for any number of workers.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.pipeline import fs
from thresher.pipeline.errors import InputError

_EXT = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl.gz", ".json.gz": "jsonl.gz", ".ndjson.gz": "jsonl.gz",
    ".jsonl.zst": "jsonl.zst", ".json.zst": "jsonl.zst", ".ndjson.zst": "jsonl.zst",
    ".parquet": "parquet", ".pq": "parquet",
    ".warc": "warc", ".warc.gz": "warc",
    ".csv": "csv", ".tsv": "tsv",
}
_SCAN_BLOCK = 1 << 18  # bytes of a JSONL file looked at at once when planning its shards


@dataclass(frozen=True)
class Shard:
    index: int
    path: str  # absolute path; undecodable bytes of a file name kept as surrogate escapes (os.fsdecode)
    rel: str  # name used in ids, quarantine records and messages: always valid UTF-8 (see display_name)
    format: str  # jsonl | jsonl.gz | jsonl.zst | json (an array) | parquet | warc | csv | tsv (one shard per file)
    start: int = 0  # byte offset (jsonl) or first row group (parquet)
    end: int = -1  # byte end (exclusive, -1 = end of file) or row-group end (parquet)
    first_line: int = 1  # line number of the first line (jsonl) or row number of the first row (parquet)
    size: int = 0  # bytes, for progress and planning

    def to_dict(self) -> dict:
        return asdict(self)


def display_name(name: str) -> str:
    r"""``name`` as valid UTF-8 text: bytes of the file name that are not UTF-8 (which Python holds as
    surrogate escapes) are written ``\xe9``. Ids, quarantine records and the manifest are JSON in
    UTF-8, which cannot carry the surrogates; the escaped form is the same on every run, so ids derived
    from it and ``--resume`` stay stable."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def open_native(path: str) -> pa.NativeFile:
    """An Arrow file for ``path``. pyarrow encodes a ``str`` path as strict UTF-8, which fails for a
    name with undecodable bytes; the bytes of the name (``os.fsencode``) open any file. A URL
    (``s3://``, ``hf://``...) is read through fsspec in ranged requests (``fs.native_input``)."""
    if fs.is_url(path):
        return fs.native_input(path)
    return pa.OSFile(os.fsencode(path))


def detect_format(path: str, declared: str = "auto") -> str | None:
    if declared != "auto":
        return declared
    name = path.lower()
    for ext in sorted(_EXT, key=len, reverse=True):
        if name.endswith(ext):
            fmt = _EXT[ext]
            if fmt == "jsonl" and name.endswith(".json") and _starts_with_bracket(path):
                return "json"  # a JSON array of records (LLaMA-Factory, Alpaca, ...), not JSON lines
            return fmt
    return None


def load_json_array(path: str, name: str | None = None) -> list:
    """The records of a file holding one JSON array; a syntax error names its line and column."""
    import json

    with fs.open_input(path) as f:
        raw = f.read()
    try:
        items = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f" at line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise InputError(f"input file '{name or display_name(path)}': not valid JSON{where}: {e}") from None
    if not isinstance(items, list):
        raise InputError(f"input file '{name or display_name(path)}': expected a JSON array of records")
    return items


def _starts_with_bracket(path: str) -> bool:
    try:
        with fs.open_input(path) as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return False
    return head.startswith(b"[")


def resolve_inputs(paths: list[str], declared: str = "auto") -> list[tuple[str, str, str]]:
    """Expand files, directories and globs into (abs path, rel name, format), sorted and unique.

    A file is read once however many ways it is reached (two globs, a symlink beside its target):
    files are told apart by (device, inode), not by path. Directory symlinks are followed, but a
    directory is never searched twice, so a symlink loop ends the walk instead of repeating it.
    Every problem (missing path, unreadable file, unknown format, corrupt compressed header)
    is reported here, before any work starts.
    """
    from thresher.pipeline.demo import demo_path  # the built-in demo corpus: 'demo:NAME'

    found: list[tuple[str, str]] = []  # (abs, rel)
    for p in paths:
        if p.startswith("demo:"):
            f = demo_path(p[5:])
            found.append((str(f), f.name))
            continue
        if fs.is_url(p):  # an object store or the Hub: listed and read through fsspec
            is_glob = _has_magic(p.split("?", 1)[0])
            files = fs.expand(p, is_glob)
            if not is_glob and [u for u, _ in files] != [p]:  # a directory: its data files, as for a local one
                files = [(u, rel) for u, rel in files if detect_format(u, declared)]
            if not files:
                raise InputError(f"input '{fs.redact(p)}' matches no files (or does not exist)")
            found += files
            continue
        if _has_magic(p):
            files = [m for m in sorted(_glob(p)) if os.path.isfile(m)]
            if not files:
                raise InputError(f"input glob '{display_name(p)}' matches no files")
            root = glob_root(p)
            found += [(os.path.abspath(m), os.path.relpath(m, root)) for m in files]
        elif os.path.isdir(p):
            base = os.path.join(p, "data") if os.path.isfile(os.path.join(p, "_SUCCESS")) else p
            files = sorted(f for f in _walk_files(base)
                           if detect_format(f, declared) and not os.path.basename(f).startswith((".", "_")))
            if not files:
                raise InputError(f"input directory '{display_name(p)}' holds no jsonl/jsonl.gz/jsonl.zst/parquet/warc/csv/tsv files")
            found += [(os.path.abspath(f), os.path.relpath(f, base)) for f in files]
        elif os.path.exists(p):
            found.append((os.path.abspath(p), os.path.basename(p)))
        else:
            raise InputError(f"input path '{display_name(p)}' does not exist")
    if not found:
        raise InputError("no input paths given")
    out: list[tuple[str, str, str]] = []
    seen: set[tuple] = set()  # (device, inode) of a local file, ("url", URL) of an object
    for absp, rel in found:
        if fs.is_url(absp):
            key = ("url", absp)  # an object is told apart by its URL
        else:
            st = os.stat(absp)
            key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        fmt = detect_format(absp, declared)
        if fmt is None:
            raise InputError(f"input file '{fs.redact(display_name(absp))}': unknown format (extension); "
                             "set input.format to jsonl, jsonl.gz, jsonl.zst, parquet, csv or tsv")
        _check_readable(absp, fmt)
        out.append((absp, display_name(rel), fmt))
    return out


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def glob_root(pattern: str) -> str:
    parts = Path(pattern).parts
    root = []
    for part in parts:
        if _has_magic(part):
            break
        root.append(part)
    return str(Path(*root)) if root else "."


def _scan(path: str) -> list[tuple[str, bool]]:
    """(name, is a directory, following symlinks) of a directory's entries; [] if it cannot be listed."""
    try:
        with os.scandir(path) as it:
            entries = []
            for e in it:
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                entries.append((e.name, is_dir))
            return entries
    except OSError:
        return []


def _dir_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _glob(pattern: str) -> Iterator[str]:
    """``glob.glob(pattern, recursive=True)`` that cannot loop. ``glob`` follows directory symlinks
    under ``**`` with no memory of where it has been, so ``dir/loop -> ..`` makes it list every file
    once per nesting level until the path is too long. Here each directory is searched at most once
    for each remaining part of the pattern. Same matching rules as ``glob``: ``**`` is any number of
    directories, and wildcards do not match names that start with a dot unless the pattern does."""
    root = glob_root(pattern)
    parts = Path(pattern).parts[len(Path(root).parts) if root != "." else 0:]
    searched: set[tuple[int, int, int]] = set()
    stack = [(root, 0)]
    while stack:
        d, i = stack.pop()
        key = _dir_key(d)
        if key is None or (*key, i) in searched:
            continue
        searched.add((*key, i))
        part, last = parts[i], i == len(parts) - 1
        if part == "**":
            if last:  # like glob: 'd/**' matches everything below d
                yield from (os.path.join(d, n) for n, _ in _scan(d) if not n.startswith("."))
            else:
                stack.append((d, i + 1))  # ** matches no directory
            stack += [(os.path.join(d, n), i) for n, is_dir in _scan(d) if is_dir and not n.startswith(".")]
        elif _has_magic(part):
            for name, is_dir in _scan(d):
                if name.startswith(".") and not part.startswith("."):
                    continue
                if fnmatch.fnmatch(name, part):
                    if last:
                        yield os.path.join(d, name)
                    elif is_dir:
                        stack.append((os.path.join(d, name), i + 1))
        else:
            path = os.path.join(d, part)
            if last:
                if os.path.lexists(path):
                    yield path
            elif os.path.isdir(path):
                stack.append((path, i + 1))


def _walk_files(base: str) -> Iterator[str]:
    """Every file below ``base``, following directory symlinks but entering each directory (by
    device and inode) once: a symlink loop, or two links to one directory, adds nothing."""
    entered: set[tuple[int, int]] = set()
    stack = [base]
    while stack:
        d = stack.pop()
        key = _dir_key(d)
        if key is None or key in entered:
            continue
        entered.add(key)
        for name, is_dir in _scan(d):
            path = os.path.join(d, name)
            if is_dir:
                stack.append(path)
            elif os.path.isfile(path):
                yield path


def _check_readable(path: str, fmt: str) -> None:
    """Open each file and read its header now, so a wrong format fails before any work. A
    compressed file that is only cut short passes: its whole lines are read and its tail goes to
    quarantine (see ``readers.iter_blocks``)."""
    name = fs.redact(display_name(path))
    if not fs.is_url(path) and not os.access(path, os.R_OK):
        raise InputError(f"input file '{name}' is not readable (permission denied)")
    try:
        if fmt == "parquet":
            with open_native(path) as f:
                pq.ParquetFile(f).metadata  # noqa: B018 - reads and checks the footer
        elif fmt in ("csv", "tsv"):
            from thresher.pipeline.io.delimited import header

            header(path, fmt)  # a header with duplicate or empty names is an InputError now
        elif fmt == "warc":
            from warcio.archiveiterator import ArchiveIterator

            with fs.open_input(path) as f:
                next(iter(ArchiveIterator(f)), None)
        elif fmt == "jsonl.gz":
            # EOFError: a valid start, cut short before the first byte of data: read in part
            with fs.open_input(path) as raw, gzip.open(raw, "rb") as f, contextlib.suppress(EOFError):
                f.read(1)
        elif fmt == "jsonl.zst":
            with fs.open_input(path) as f:
                magic = f.read(4)
            if magic and magic != b"\x28\xb5\x2f\xfd":
                raise InputError(f"input file '{name}' is not zstd-compressed (bad magic number)")
        elif fmt == "json":  # an array cannot be read in parts: check its syntax now, before any work
            load_json_array(path)
        else:
            with fs.open_input(path) as f:
                f.read(1)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to open is the same user error
        if fs.is_url(path):
            raise InputError(f"input file '{name}' cannot be read as {fmt}: {fs.describe(e)}") from None
        raise InputError(f"input file '{name}' cannot be read as {fmt}: {e}") from None


def plan_shards(files: list[tuple[str, str, str]], shard_size_mb: float) -> list[Shard]:
    """Split files into shards of at most about ``shard_size_mb`` (a plain JSONL file bigger than that:
    into equal parts, ``_jsonl_ranges``)."""
    target = max(1, int(shard_size_mb * (1 << 20)))
    shards: list[Shard] = []
    for absp, rel, fmt in files:
        size = fs.size(absp) if fs.is_url(absp) else os.path.getsize(absp)
        if fmt == "jsonl" and size > target:
            for start, end, line in _jsonl_ranges(absp, size, target):
                shards.append(Shard(len(shards), absp, rel, fmt, start, end, line, end - start))
        elif fmt == "parquet":
            with open_native(absp) as f:
                md = pq.ParquetFile(f).metadata
            groups = [(md.row_group(i).num_rows, md.row_group(i).total_byte_size) for i in range(md.num_row_groups)]
            g0, rows_before, acc, row0 = 0, 0, 0, 0
            for i, (rows, nbytes) in enumerate(groups):
                acc += nbytes
                rows_before += rows
                if acc >= target or i == len(groups) - 1:
                    shards.append(Shard(len(shards), absp, rel, fmt, g0, i + 1, row0 + 1, acc))
                    g0, acc, row0 = i + 1, 0, rows_before
            if not groups:
                shards.append(Shard(len(shards), absp, rel, fmt, 0, 0, 1, 0))
        else:
            shards.append(Shard(len(shards), absp, rel, fmt, 0, -1, 1, size))
    return shards


def _jsonl_ranges(path: str, size: int, target: int) -> list[tuple[int, int, int]]:
    """Byte ranges [start, end) that each begin on a line start, with their first line number: the file
    in ``ceil(size / target)`` shards of about equal size, not shards of ``target`` bytes and a short
    last one. Shard ``i`` ends after the first newline at or after ``size * i / n``, its nominal end (a
    line longer than a shard merges the shards it spans). Equal shards keep a pass's workers busy to its
    end: 215 MB in 64 MB shards was 64/64/64/23 MB, and of two workers one waited a quarter of the pass
    (docs/benchmarks.md, "Sixth step, time"). The cuts depend on the file alone, never on the worker count.
    One streaming read, newlines found with numpy ``_SCAN_BLOCK`` bytes at a time (cache-sized)."""
    import numpy as np

    n = -(-size // target)
    nominal = [size * i // n for i in range(1, n)]
    ranges: list[tuple[int, int, int]] = []
    start, start_line = 0, 1
    j = 0  # the next nominal cut
    offset = 0  # file offset of the current chunk
    lines_before = 0  # newlines in bytes [0, offset)
    with fs.open_input(path) as f:
        while j < len(nominal):
            chunk = f.read(_SCAN_BLOCK)
            if not chunk:
                break
            nl = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            while j < len(nominal):
                i = int(np.searchsorted(nl, max(nominal[j], start) - offset))  # the first newline at or after it
                if i == len(nl):
                    break  # in a later chunk
                cut = offset + int(nl[i]) + 1
                if cut >= size:
                    j = len(nominal)
                    break
                ranges.append((start, cut, start_line))
                start, start_line = cut, lines_before + i + 2
                j += 1
            lines_before += len(nl)
            offset += len(chunk)
    ranges.append((start, size, start_line))
    return ranges
