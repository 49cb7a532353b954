"""A run's data profile: mergeable histograms of every filter stat and of the corpus (lengths,
languages), built while rows stream and merged across shards, workers and executors.

A numeric distribution is a ``Sketch``: log-spaced buckets with a relative accuracy of about 1%
(the DDSketch construction, Masson et al. 2019, "DDSketch: A Fast and Fully-Mergeable Quantile
Sketch with Relative-Error Guarantees", VLDB): bucket ``i`` holds the values in
``(gamma^(i-1), gamma^i]`` (negative values mirrored, zeros apart), so sketches of the same data
split any way merge, by adding counts, into the same sketch. Memory is bounded by the range of the
values (about 700 buckets per decade-range of 10^6), never by the number of rows; the report draws
its histograms from them, so a 1M-row run's page is as small as a 1k-row one's.

``profile.json`` (written beside ``ledger.json``) holds::

    {"version": 1,
     "ops": {op_key: {"stats": {stat: sketch}, "outside": {stat: {"below": n, "above": n}},
                      "categories": {stat: {value: n}}, "distributions": {name: {value: n}}}},
     "corpus": {"input": {"chars": sketch, "words": sketch, "lines": sketch},
                "output": {..., "lang": {value: n}}}}

``outside`` counts, exactly, the rows whose stat lies outside the filter's thresholds
(``Filter.thresholds``): what each threshold drops on its own.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thresher.operators.common.utf8 import find_bytes, row_of, string_buffers

VERSION = 1
GAMMA = 1.02  # bucket ratio: values are known to within 1% (relative)
_LOG_GAMMA = math.log(GAMMA)
MAX_CATEGORIES = 200  # distinct values kept per categorical stat (the rest counted as "(other)")
OTHER = "(other)"


@dataclass
class Sketch:
    """A mergeable histogram of numbers with ~1% relative accuracy (see the module docstring)."""

    n: int = 0  # values counted (nulls and NaN not among them)
    nulls: int = 0
    zeros: int = 0
    pos: Counter = field(default_factory=Counter)  # bucket index -> count
    neg: Counter = field(default_factory=Counter)
    lo: float = math.inf
    hi: float = -math.inf
    total: float = 0.0
    total_sq: float = 0.0

    # -------------------------------------------------------------------------- building
    def add(self, values) -> Sketch:
        """Count ``values`` (a numpy array, an Arrow array or a list; booleans count as 0/1)."""
        v = _floats(values)
        bad = np.isnan(v)
        self.nulls += int(bad.sum())
        v = v[~bad]
        if not len(v):
            return self
        self.n += len(v)
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        self.total += float(v.sum())
        self.total_sq += float(np.square(v).sum())
        self.zeros += int((v == 0).sum())
        for sign, counter in ((1, self.pos), (-1, self.neg)):
            part = v[v > 0] if sign > 0 else -v[v < 0]
            if len(part):
                idx, counts = np.unique(bucket_index(part), return_counts=True)
                counter.update(dict(zip(idx.tolist(), counts.tolist(), strict=True)))
        return self

    def merge(self, other: Sketch) -> Sketch:
        self.n += other.n
        self.nulls += other.nulls
        self.zeros += other.zeros
        self.pos.update(other.pos)
        self.neg.update(other.neg)
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)
        self.total += other.total
        self.total_sq += other.total_sq
        return self

    # -------------------------------------------------------------------------- reading
    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        if not self.n:
            return math.nan
        return math.sqrt(max(0.0, self.total_sq / self.n - self.mean**2))

    def buckets(self) -> list[tuple[float, float, int]]:
        """(low, high, count) of every non-empty bucket, in value order (zeros as [0, 0])."""
        out = [(-bucket_upper(i), -bucket_upper(i - 1), c) for i, c in sorted(self.neg.items(), reverse=True)]
        if self.zeros:
            out.append((0.0, 0.0, self.zeros))
        out += [(bucket_upper(i - 1), bucket_upper(i), c) for i, c in sorted(self.pos.items())]
        return [(max(a, self.lo), min(b, self.hi), c) for a, b, c in out]

    def quantile(self, q: float) -> float:
        """The value below which a share ``q`` of the values lie (to ~1%; exact at 0 and 1)."""
        if not self.n:
            return math.nan
        if q <= 0:
            return self.lo
        if q >= 1:
            return self.hi
        rank = q * (self.n - 1)
        seen = 0
        for a, b, c in self.buckets():
            if seen + c > rank:
                return a if a == b else (2 * a * b / (a + b) if a > 0 else (a + b) / 2)
            seen += c
        return self.hi

    def share_outside(self, lo: float | None, hi: float | None) -> float:
        """The share of values under ``lo`` or over ``hi`` (bucket resolution)."""
        if not self.n:
            return 0.0
        out = 0.0
        for a, b, c in self.buckets():
            for bound, below in ((lo, True), (hi, False)):
                if bound is None:
                    continue
                if (below and b < bound) or (not below and a > bound):
                    out += c
                elif a < bound < b:
                    part = (bound - a) / (b - a)
                    out += c * (part if below else 1 - part)
        return min(1.0, out / self.n)

    def rank(self, x, strict: bool = False):
        """How many values are at or below ``x`` (below it, when ``strict``), each bucket's values
        spread evenly across it: exact at zero and beyond the extremes, to a bucket's width
        otherwise. ``x`` a number or an array (vectorised)."""
        x = np.asarray(x, dtype=np.float64)
        b = self.buckets()
        if not b:
            return np.zeros(x.shape)
        a = np.array([t[0] for t in b])
        z = np.array([t[1] for t in b])
        c = np.array([t[2] for t in b], dtype=np.float64)
        xs = x[..., None]
        point = (xs > a) if strict else (xs >= a)
        frac = np.where(z > a, np.clip((xs - a) / np.where(z > a, z - a, 1.0), 0.0, 1.0), point)
        return frac @ c

    def default_range(self) -> tuple[float, float]:
        """The range a chart shows: the 0.5 and 99.5 percentiles, widened to the extremes when they
        are near (within a tenth of that span; measured in decades when the values are positive)."""
        if not self.n:
            return 0.0, 1.0
        lo, hi = self.quantile(0.005), self.quantile(0.995)
        t = math.log if self.lo > 0 else (lambda x: x)
        span = t(hi) - t(lo) if hi > lo else 0.0
        if t(lo) - t(self.lo) <= 0.1 * span:
            lo = self.lo
        if t(self.hi) - t(hi) <= 0.1 * span:
            hi = self.hi
        return lo, hi

    def histogram(self, bins: int = 40, lo: float | None = None, hi: float | None = None,
                  log: bool | None = None, edges=None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(edges, counts, log) for drawing: the values in ``bins`` equal bins between ``lo`` and
        ``hi`` (default: ``default_range``), on a log scale when the values are positive and span
        over two decades, or in the bins ``edges`` gives. Each bucket's count is spread evenly
        over its (1%-wide) range, so counts are floats and bins narrower than a bucket stay
        smooth. Values beyond the range are counted in the first and last bins; the counts add up
        to ``n``."""
        if not self.n:
            return np.array([0.0, 1.0]), np.zeros(1), False
        if edges is not None:
            edges = np.asarray(edges, dtype=np.float64)
            log = bool(log)
        else:
            dlo, dhi = self.default_range()
            lo = dlo if lo is None else lo
            hi = dhi if hi is None else hi
            if log is None:
                log = lo > 0 and hi / lo > 100
            if hi <= lo:
                return np.array([lo - 0.5, lo + 0.5]), np.array([float(self.n)]), False
            edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
        below = self.rank(edges)
        counts = np.diff(below)
        counts[0] += below[0]
        counts[-1] += self.n - below[-1]
        return edges, np.maximum(counts, 0.0), bool(log)

    # -------------------------------------------------------------------------- (de)serialising
    def to_dict(self) -> dict:
        return {"n": self.n, "nulls": self.nulls, "zeros": self.zeros,
                "pos": sorted(self.pos.items()), "neg": sorted(self.neg.items()),
                "min": None if not self.n else self.lo, "max": None if not self.n else self.hi,
                "sum": self.total, "sum_sq": self.total_sq}

    @classmethod
    def from_dict(cls, d: dict) -> Sketch:
        return cls(d["n"], d["nulls"], d["zeros"], Counter({int(i): c for i, c in d["pos"]}),
                   Counter({int(i): c for i, c in d["neg"]}),
                   math.inf if d["min"] is None else d["min"], -math.inf if d["max"] is None else d["max"],
                   d["sum"], d["sum_sq"])


def bucket_index(v: np.ndarray) -> np.ndarray:
    """The bucket of each positive value: the smallest ``i`` with ``v <= gamma^i``."""
    return np.ceil(np.log(v) / _LOG_GAMMA - 1e-9).astype(np.int64)


def bucket_upper(i: int) -> float:
    return GAMMA**i


def _floats(values) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_boolean(values.type):
            values = pc.cast(values, pa.int8())
        return values.to_numpy(zero_copy_only=False).astype(np.float64)
    return np.asarray(values, dtype=np.float64)


def is_numeric(values) -> bool:
    t = values.type if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.from_numpy_dtype(np.asarray(values).dtype)
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def count_categories(values, into: dict | None = None) -> dict:
    """Value counts of a categorical column (strings), merged into ``into``; capped at
    ``MAX_CATEGORIES`` values (the least frequent fold into ``(other)``)."""
    import polars as pl

    into = Counter(into or {})
    s = pl.Series(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else pl.from_arrow(values)
    vc = s.cast(pl.Utf8).fill_null("(null)").value_counts()
    into.update(dict(zip(vc[vc.columns[0]].to_list(), vc["count"].to_list(), strict=True)))
    return cap(into)


def cap(counts: dict) -> dict:
    counts = Counter(counts)
    if len(counts) <= MAX_CATEGORIES:
        return dict(counts)
    keep = dict(counts.most_common(MAX_CATEGORIES - 1))
    keep[OTHER] = keep.get(OTHER, 0) + sum(counts.values()) - sum(keep.values())
    return keep


# ------------------------------------------------------------------------------------ corpus stats
def row_text(table: pa.Table, text_key: str) -> pa.Array | None:
    """The text a row's length is measured on: the text column, else a conversation's turns joined
    (``messages``, then a preference pair's ``chosen``), else None."""
    if text_key and text_key in table.column_names:
        col = table.column(text_key)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            return None
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()  # combine_chunks copies even one
    from thresher.operators.common.chat import turn_text

    for name in ("messages", "chosen"):
        if name in table.column_names and pa.types.is_list(table.column(name).type):
            try:
                return turn_text(table.column(name).combine_chunks(), ("system", "user", "assistant"))
            except Exception:  # noqa: BLE001 - not a list of {role, content}: not measured
                return None
    return None


def length_stats(text: pa.Array, words: bool = True) -> dict[str, np.ndarray]:
    """Characters, lines and (``words``) words — runs of non-space — per row, vectorised. Words cost
    about ten times what characters and lines do (a regex pass), so a run's profile leaves them to
    ``thresher analyze``."""
    import polars as pl

    text = pc.fill_null(text, "")
    chars, newlines = utf8_counts(text)
    out = {"chars": chars, "lines": newlines + (chars > 0)}
    if words:
        out["words"] = pl.from_arrow(text).str.count_matches(r"\S+").to_numpy()
    return out


def utf8_counts(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(characters, newlines) of each string of ``text`` (nulls as ''), as int64, counted over the
    array's UTF-8 data buffer with numpy: a character is a byte that is not a continuation byte
    (``10xxxxxx``, RFC 3629 section 3), so only the continuation bytes, and the newline bytes, are
    found (a slice at a time, ``find_bytes``) and counted per row. Equals ``utf8_length`` and ``count_substring(text, "\\n")``; ~5x
    less CPU than ``count_substring`` (docs/benchmarks.md, "Exact dedup and memory, round two")."""
    d, offs = string_buffers(text)
    n = len(offs) - 1
    cont = find_bytes(d, lambda seg: (seg & 0xC0) == 0x80)
    chars = np.diff(offs) - np.bincount(row_of(offs, cont), minlength=n)[:n]
    return chars, np.bincount(row_of(offs, find_bytes(d, lambda seg: seg == 10)), minlength=n)[:n]


# ------------------------------------------------------------------------------------ the profile
class Profile:
    """What one shard (or the whole run, after merging) measured; see the module docstring."""

    def __init__(self, data: dict | None = None):
        self.ops: dict[str, dict] = {}
        self.corpus: dict[str, dict] = {}
        if data:
            self.merge(data)

    def _op(self, key: str) -> dict:
        return self.ops.setdefault(key, {"stats": {}, "outside": {}, "categories": {}, "distributions": {}})

    def add_stats(self, key: str, stats: dict, bounds: dict | None = None) -> None:
        """A filter's stats on a batch, and (exactly) how many rows each threshold puts outside."""
        entry = self._op(key)
        for name, values in stats.items():
            if is_numeric(values):
                entry["stats"].setdefault(name, Sketch()).add(values)
            elif isinstance(values, (pa.Array, pa.ChunkedArray)) and (pa.types.is_string(values.type)
                                                                      or pa.types.is_large_string(values.type)):
                entry["categories"][name] = count_categories(values, entry["categories"].get(name))
        for name, b in (bounds or {}).items():
            if name in stats and is_numeric(stats[name]):
                below, above = b.masks(stats[name])
                out = entry["outside"].setdefault(name, {"below": 0, "above": 0})
                out["below"] += int(below.sum())
                out["above"] += int(above.sum())

    def add_distribution(self, key: str, name: str, counts: dict) -> None:
        """A discrete distribution an op measured (e.g. duplicate-cluster sizes): value -> rows."""
        dist = self._op(key)["distributions"]
        merged = Counter(dist.get(name, {}))
        merged.update({str(k): int(v) for k, v in counts.items()})
        dist[name] = cap(merged)

    def add_corpus(self, where: str, table: pa.Table, text_key: str, extra: dict | None = None,
                   words: bool = False) -> None:
        """Lengths (and languages, where a ``lang`` column exists) of rows at ``where`` (input/output);
        ``extra``: more per-row measurements already made (an analysis's words and tokens)."""
        if table.num_rows == 0:
            return
        part = self.corpus.setdefault(where, {})
        text = row_text(table, text_key)
        if text is not None:
            for name, values in length_stats(text, words=words).items():
                part.setdefault(name, Sketch()).add(values)
        for name, values in (extra or {}).items():
            part.setdefault(name, Sketch()).add(values)
        if "lang" in table.column_names:
            part["lang"] = count_categories(table.column("lang"), part.get("lang"))

    # -------------------------------------------------------------------------- (de)serialising
    def merge(self, data: dict) -> Profile:
        for key, entry in data.get("ops", {}).items():
            mine = self._op(key)
            for name, sk in entry.get("stats", {}).items():
                mine["stats"].setdefault(name, Sketch()).merge(sk if isinstance(sk, Sketch) else Sketch.from_dict(sk))
            for name, out in entry.get("outside", {}).items():
                acc = mine["outside"].setdefault(name, {"below": 0, "above": 0})
                acc["below"] += out["below"]
                acc["above"] += out["above"]
            for name, counts in entry.get("categories", {}).items():
                merged = Counter(mine["categories"].get(name, {}))
                merged.update(counts)
                mine["categories"][name] = cap(merged)
            for name, counts in entry.get("distributions", {}).items():
                self.add_distribution(key, name, counts)
        for where, part in data.get("corpus", {}).items():
            mine = self.corpus.setdefault(where, {})
            for name, value in part.items():
                if name == "lang":
                    merged = Counter(mine.get("lang", {}))
                    merged.update(value)
                    mine["lang"] = cap(merged)
                else:
                    mine.setdefault(name, Sketch()).merge(value if isinstance(value, Sketch) else Sketch.from_dict(value))
        return self

    def to_dict(self) -> dict:
        ops = {k: {"stats": {n: s.to_dict() for n, s in e["stats"].items()}, "outside": e["outside"],
                   "categories": e["categories"], "distributions": e["distributions"]}
               for k, e in self.ops.items()}
        corpus = {w: {n: (v if n == "lang" else v.to_dict()) for n, v in part.items()} for w, part in self.corpus.items()}
        return {"version": VERSION, "ops": ops, "corpus": corpus}

    def take(self) -> dict:
        """This profile as a dict, and start afresh (what a block or shard hands to its marker)."""
        out = self.to_dict()
        self.ops, self.corpus = {}, {}
        return out
