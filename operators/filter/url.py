"""Drop rows by their URL: banned domains (and their subdomains), banned URLs, banned words in the URL.

The rules are datatrove's ``URLFilter`` (src/datatrove/pipeline/filters/url_filter.py), on lists
the user supplies; see ``UrlFilter``. Everything runs over whole columns: the host and the URL key
come from one RE2 ``extract_regex``, domains and parent domains are looked up in a hashed set
(``StringSet``), URL words are Arrow list tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.pipeline.columns import over
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.ops import Filter, OpParams
from thresher.pipeline.registry import register

# An example list in the list format (reserved documentation names only: not a real blocklist).
EXAMPLE_BLOCKLIST = Path(__file__).resolve().parent / "data" / "url_blocklist.example.txt"

# scheme:// (or //), userinfo@, host, :port, then path and query up to a fragment (RE2 and Python re alike)
URL_HOST = r"^\s*(?:(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//)?(?:[^@/?#\s]*@)?(?P<host>[^:/?#\s]*)"
URL_PARTS = URL_HOST + r"(?::[0-9]*)?(?P<rest>[^#\s]*)"
NOT_ALNUM = r"[^a-z0-9]+"  # datatrove's URL word separator (on the lower-cased URL here)

_SEEDS = (0x7468_7265_7368, 0x7572_6C66_696C)  # two polars hash seeds: 128 bits per string


class StringSet:
    """A set of strings looked up a whole Arrow column at a time.

    ``pyarrow.compute.is_in`` builds a hash table of its value set on every call (seconds for a
    UT1-sized list of millions of domains); this keeps two 64-bit hashes of each member, sorted,
    and answers with ``numpy.searchsorted`` — built once per worker, 16 bytes a member. Two
    strings are taken as equal when both hashes agree (a false match has probability ~2^-128)."""

    def __init__(self, values: pa.Array | pa.ChunkedArray | Iterable[str]):
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            s = pl.from_arrow(values.cast(pa.large_string()))
        else:
            s = pl.Series(list(values), dtype=pl.Utf8)
        s = s.drop_nulls()
        h1, h2 = (s.hash(seed=seed).to_numpy() for seed in _SEEDS)
        order = np.argsort(h1)
        h1, h2 = h1[order], h2[order]
        dup = np.zeros(len(h1), dtype=bool)  # a string listed twice: keep one
        dup[1:] = (h1[1:] == h1[:-1]) & (h2[1:] == h2[:-1])
        self.h1, self.h2 = h1[~dup], h2[~dup]

    def __len__(self) -> int:
        return len(self.h1)

    def contains(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Per value, whether it is a member (null: False)."""
        n = len(values)
        out = np.zeros(n, dtype=bool)
        if not len(self.h1) or not n:
            return out
        s = pl.from_arrow(values)
        q1, q2 = (s.hash(seed=seed).to_numpy() for seed in _SEEDS)
        lo = np.searchsorted(self.h1, q1, "left")
        hi = np.searchsorted(self.h1, q1, "right")
        one = np.flatnonzero(hi - lo == 1)
        out[one] = self.h2[lo[one]] == q2[one]
        for i in np.flatnonzero(hi - lo > 1):  # two members share their first hash: never in practice
            out[i] = bool(np.isin(q2[i], self.h2[lo[i]:hi[i]]))
        return out & ~s.is_null().to_numpy()


def url_parts(urls: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(host, key) of each URL. host: lower case, without userinfo, port, a leading ``www.`` or a
    trailing dot. key: host + path and query (case kept), without scheme, fragment or trailing
    ``/`` — ``https://user@WWW.Example.com:8080/a/b/?q=1#top`` -> ``example.com``,
    ``example.com/a/b/?q=1``; ``http://www.example.com/a/`` -> ``example.com/a``."""
    parts = pc.extract_regex(_strings(urls), URL_PARTS)
    host = clean_host(pc.struct_field(parts, "host"))
    rest = pc.utf8_rtrim(pc.struct_field(parts, "rest"), characters="/")
    return host, pc.binary_join_element_wise(host, rest, "")


def url_hosts(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The host of each URL, as ``url_parts`` gives it (one capture less: about twice as fast)."""
    return clean_host(pc.struct_field(pc.extract_regex(_strings(urls), URL_HOST), "host"))


def clean_host(host: pa.Array) -> pa.Array:
    """Lower case, without a leading ``www.`` or trailing dots."""
    host = pc.utf8_lower(host)
    host = pc.if_else(pc.fill_null(pc.starts_with(host, "www."), False), pc.utf8_slice_codeunits(host, 4), host)
    return pc.utf8_rtrim(host, characters=".")


def _strings(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values if values.type == pa.string() else values.cast(pa.string())


def parent_domain_hit(hosts: pa.Array, banned: StringSet) -> np.ndarray:
    """Per host, whether it or a parent domain (``a.b.example.com`` -> ``b.example.com`` ->
    ``example.com`` -> ``com``) is in ``banned``: one lookup per level, over the rows that still
    have a dot."""
    hit = banned.contains(hosts)
    rows = np.arange(len(hosts))
    cur = hosts
    while len(cur):
        dotted = np.asarray(pc.fill_null(pc.match_substring(cur, "."), False).to_numpy(zero_copy_only=False), bool)
        if not dotted.any():
            break
        rows = rows[dotted]
        cur = pc.replace_substring_regex(cur.filter(pa.array(dotted)), r"^[^.]*\.", "", max_replacements=1)
        hit[rows] |= banned.contains(cur)
    return hit


def _distinct_per_row(rows: np.ndarray, tokens: pa.Array, hit: np.ndarray, n: int) -> np.ndarray:
    """How many distinct hit tokens each of ``n`` rows has."""
    if not hit.any():
        return np.zeros(n, dtype=np.int64)
    pairs = pl.DataFrame({"r": rows[hit], "t": pl.from_arrow(tokens.filter(pa.array(hit)))}).unique()
    return np.bincount(pairs["r"].to_numpy(), minlength=n).astype(np.int64)


def _numpy(values) -> np.ndarray:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return np.asarray(values.to_numpy(zero_copy_only=False))
    return np.asarray(values)


def _nonempty(values: pa.Array) -> pa.Array:
    return values.filter(pc.fill_null(pc.greater(pc.utf8_length(values), 0), False))


def normalise_words(words: pa.Array) -> pa.Array:
    """Banned words as datatrove compares them: lower case, with everything but a-z and 0-9
    removed (words left empty are dropped)."""
    return _nonempty(pc.replace_substring_regex(pc.utf8_lower(words), NOT_ALNUM, ""))


def domain_hosts(entries: pa.Array) -> pa.Array:
    """Blocklist domains as written (``*.Example.com.``, ``.example.com``, ``www.example.com``, a
    URL) -> the hosts they ban with their subdomains (``example.com``)."""
    entries = pc.utf8_ltrim(pc.utf8_trim_whitespace(_strings(entries)), characters="*.")
    urlish = pc.fill_null(pc.match_substring_regex(entries, r"[/:@\s]"), False)
    if pc.any(urlish).as_py():  # written as a URL (or with a port): take its host; plain names need not
        entries = pc.replace_with_mask(entries, urlish, url_hosts(entries.filter(urlish)))
    return _nonempty(clean_host(entries))


def read_list(paths: list[str], params: list[str] | None = None, *, what: str = "list file") -> pa.Array:
    """The entries of ``params`` and of list files, trimmed: one per line, blank lines and lines
    starting with ``#`` skipped; a ``.gz``, ``.bz2`` or ``.zst`` file is read compressed. Read as
    whole columns (no Python string per line): a UT1 list holds millions of lines."""
    parts = [pa.array(params or [], pa.large_string())]
    for path in paths:
        if not Path(path).is_file():
            raise ThresherError(f"{what} '{path}' does not exist")
        with pa.input_stream(path, compression="detect") as f:
            data = f.read().decode("utf-8", errors="replace")
        parts.append(pc.list_flatten(pc.split_pattern(pa.array([data], pa.large_string()), "\n")))
    lines = pc.utf8_trim_whitespace(pa.concat_arrays(parts))
    keep = pc.and_(pc.greater(pc.utf8_length(lines), 0), pc.invert(pc.starts_with(lines, "#")))
    return lines.filter(pc.fill_null(keep, False)).cast(pa.string())


@register
class UrlFilter(Filter):
    """Drop rows whose URL is on a blocklist: a banned domain or any of its subdomains, a banned URL,
    a banned word in the URL, or enough "soft" banned words.

    The rules, in order (a row is recorded under the first it fails), are datatrove's ``URLFilter``
    (src/datatrove/pipeline/filters/url_filter.py, the URL filter of FineWeb's pipeline, which it
    runs on UT1's adult blocklist):

    - ``banned_domain``: the URL's host, or a parent domain of it, is listed (``example.com`` bans
      ``example.com``, ``www.example.com`` and ``a.b.example.com``; ``a.example.com`` bans itself
      and its subdomains, not ``example.com``). Hosts and entries are compared in lower case without userinfo, port, a
      leading ``www.`` or a trailing dot; entries may be written ``*.example.com``. (datatrove
      matches the registered domain and the full host, via the Public Suffix List; walking every
      parent instead also catches intermediate entries, and needs no suffix list.)
    - ``banned_url``: the URL is listed, compared without scheme, ``www.``, port, fragment or
      trailing ``/`` (``https://www.example.com/a/`` matches the UT1-style entry ``example.com/a``);
      datatrove compares the raw string.
    - ``banned_word``: a word of the URL (the lower-cased URL split on everything but a-z, 0-9) is
      a hard banned word. Entries are lower-cased with everything but a-z, 0-9 removed, as datatrove
      does; datatrove does not lower-case the URL.
    - ``soft_banned_words``: the URL has at least ``soft_word_threshold`` distinct soft banned words
      (datatrove: 2).
    - ``banned_subword``: a banned subword occurs anywhere in the URL with everything but a-z, 0-9
      removed (``porn`` catches ``free-porn.example`` and ``pornhub.example``, and also any URL
      whose letters merely run together into it: keep subwords long and unambiguous).

    Lists come from parameters and from files (one entry per line, ``#`` comments, ``.gz`` read
    compressed). Nothing is banned by default: real blocklists are yours to supply, e.g. UT1's
    (https://dsi.ut-capitole.fr/blacklists/, Université Toulouse Capitole; datatrove downloads its
    ``adult`` category): give ``adult/domains`` to ``banned_domains_files`` and ``adult/urls`` to
    ``banned_urls_files``. ``EXAMPLE_BLOCKLIST`` (``operators/filter/data/url_blocklist.example.txt``)
    shows the format with reserved example names only. Rows without a URL (null, empty, or no
    ``url_key`` column in the batch) are kept, or dropped as ``missing_url``.
    """

    name = "url_filter"
    stats = {
        "has_url": "the row has a URL",
        "banned_domain": "its host or a parent domain is a banned domain",
        "banned_url": "the URL is a banned URL",
        "banned_words": "distinct hard banned words among the URL's words",
        "soft_banned_words": "distinct soft banned words among the URL's words",
        "banned_subword": "a banned subword occurs in the URL (letters and digits only)",
    }
    bounds = {"soft_banned_words": (None, "soft_word_threshold", False)}
    example = {"banned_domains_files": ["ut1/adult/domains"], "banned_urls_files": ["ut1/adult/urls"],
               "banned_words": ["porn", "xxx"], "soft_banned_words": ["girls", "hot", "live", "cam"],
               "soft_word_threshold": 2}

    class Params(OpParams):
        url_key: str = Field("url", description="the column holding each row's URL")
        missing_url: Literal["keep", "drop"] = Field("keep", description="rows without a URL: keep | drop")
        banned_domains: list[str] = Field([], description="domains banned with all their subdomains")
        banned_domains_files: list[str] = Field([], description="files of banned domains (UT1: adult/domains)")
        banned_urls: list[str] = Field([], description="URLs banned exactly (scheme, www., port, fragment ignored)")
        banned_urls_files: list[str] = Field([], description="files of banned URLs (UT1: adult/urls)")
        banned_words: list[str] = Field([], description="words that ban a URL containing one of them")
        banned_words_files: list[str] = Field([], description="files of hard banned words")
        soft_banned_words: list[str] = Field([], description="words that ban a URL holding soft_word_threshold of them")
        soft_banned_words_files: list[str] = Field([], description="files of soft banned words")
        soft_word_threshold: int = Field(2, ge=1, description="distinct soft banned words that ban a URL (datatrove: 2)")
        banned_subwords: list[str] = Field([], description="strings that ban a URL they occur in (letters and digits only)")
        banned_subwords_files: list[str] = Field([], description="files of banned subwords")

    _LISTS = ("banned_domains", "banned_urls", "banned_words", "soft_banned_words", "banned_subwords")

    def _entries(self, which: str) -> pa.Array:
        p = self.params
        return read_list(getattr(p, f"{which}_files"), getattr(p, which), what=f"{self.name}: {which}_files:")

    def prepare(self) -> None:
        for which in self._LISTS:
            for path in getattr(self.params, f"{which}_files"):
                if not Path(path).is_file():
                    raise ThresherError(f"{self.name}: {which}_files: '{path}' does not exist")

    def setup(self) -> None:
        self._domains = StringSet(domain_hosts(self._entries("banned_domains")))
        self._urls = StringSet(_nonempty(url_parts(self._entries("banned_urls"))[1]))
        self._words = StringSet(normalise_words(self._entries("banned_words")))
        self._soft = StringSet(normalise_words(self._entries("soft_banned_words")))
        self._subwords = sorted(set(normalise_words(self._entries("banned_subwords")).to_pylist()))

    def compute_stats(self, batch: pa.Table) -> dict[str, np.ndarray]:
        self.ensure_setup()
        n = batch.num_rows
        key = self.params.url_key
        urls = batch[key] if key in batch.column_names else pa.nulls(n, pa.string())
        urls = urls.combine_chunks() if isinstance(urls, pa.ChunkedArray) else urls
        if not pa.types.is_string(urls.type) and not pa.types.is_large_string(urls.type):
            urls = pa.nulls(n, pa.string()) if pa.types.is_null(urls.type) else urls.cast(pa.string())
        has_url = np.asarray(pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(urls)), 0), False)
                             .to_numpy(zero_copy_only=False), dtype=bool)
        # each rule's work is done only when its list is not empty (by default all are)
        none, zero = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
        domain, url, hard, soft, subword = none, none, zero, zero, none
        if len(self._urls):
            host, url_key = url_parts(urls)
            url = self._urls.contains(url_key) & has_url
        elif len(self._domains):
            host = url_hosts(urls)
        if len(self._domains):
            domain = parent_domain_hit(host, self._domains) & has_url
        lower = pc.utf8_lower(urls)
        if len(self._words) or len(self._soft):
            tokens = pc.split_pattern_regex(lower, NOT_ALNUM)
            flat = pc.list_flatten(tokens)
            rows = np.asarray(pc.list_parent_indices(tokens).to_numpy(zero_copy_only=False), dtype=np.int64)
            nonempty = np.asarray(pc.greater(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False), dtype=bool)
            hard = _distinct_per_row(rows, flat, self._words.contains(flat) & nonempty, n)
            soft = _distinct_per_row(rows, flat, self._soft.contains(flat) & nonempty, n)
        if self._subwords:
            compact = pl.from_arrow(pc.replace_substring_regex(lower, NOT_ALNUM, ""))
            subword = np.asarray(compact.str.contains_any(self._subwords).fill_null(False).to_numpy(), bool) & has_url
        return {"has_url": has_url, "banned_domain": domain, "banned_url": url, "banned_words": hard,
                "soft_banned_words": soft, "banned_subword": subword}

    def drop_reasons(self, stats: dict[str, pa.Array]) -> dict[str, np.ndarray]:
        def flag(name: str) -> np.ndarray:
            return _numpy(stats[name]).astype(bool)

        missing = ~flag("has_url")
        return {
            "missing_url": missing if self.params.missing_url == "drop" else np.zeros(len(missing), bool),
            "banned_domain": flag("banned_domain"),
            "banned_url": flag("banned_url"),
            "banned_word": _numpy(stats["banned_words"]) > 0,
            "soft_banned_words": over(stats["soft_banned_words"], self.params.soft_word_threshold, inclusive=False),
            "banned_subword": flag("banned_subword"),
        }
