"""Near-duplicate removal with SimHash (Charikar 2002, "Similarity estimation techniques from rounding
algorithms"; Manku, Jain & Das Sarma 2007, "Detecting near-duplicates for web crawling"), as
Data-Juicer's ``document_simhash_deduplicator`` does it.

Data-Juicer's definition (``data_juicer/ops/deduplicator/document_simhash_deduplicator.py``, with
the ``simhash-py`` package): the text is lower-cased (``lowercase``), substrings matching
``ignore_pattern`` are removed, and shingles are ``window_size`` (6) consecutive words
(``tokenization: space``) or characters (``character``); each shingle is hashed to 64 bits and the
document's SimHash sets bit ``j`` when more of its shingle hashes have bit ``j`` set than clear.
Two documents are near-duplicates when their SimHashes differ in at most ``hamming_distance`` (4)
bits. Candidates are found as Manku et al. (and ``simhash.find_all``) do: the 64 bits are cut into
``num_blocks`` (6) blocks; two hashes within ``k`` bits agree on at least ``num_blocks - k`` whole
blocks, so every choice of ``num_blocks - k`` blocks is a bucketing key, and only hashes that share
a key are compared. Near-duplicate pairs are joined into clusters (connected components) and one
row of each cluster stays (Data-Juicer keeps the first).

fingerprint: one compiled pass per batch: shingle hashes (``operators.common.minhash``'s kernels),
a 64-bit finaliser (MurmurHash3's fmix64) so every bit of a shingle hash is fair, and the bit
majority per document. resolve: rows with the same SimHash are grouped (polars); for each block
combination the distinct SimHashes are bit-permuted so the chosen blocks lead (Manku et al.'s
permuted tables), sorted (numpy), and one compiled pass compares the hashes inside each run of equal
leading blocks with a popcount, keeping only the pairs within the distance (memory follows the
answer, not the candidates); union-find components
(``operators.dedup.clusters``) with the keep policy make the decisions.

Differences from Data-Juicer, on purpose: Data-Juicer splits words on spaces only and its shingle
range leaves out the last window, so a document of ``window_size`` words or fewer gets no shingle,
SimHash 0, and is a "duplicate" of every other such document; here words are split on any
whitespace, every full window counts, a shorter document is one shingle of all its words, and an
empty document (no shingle) is never a duplicate. ``ignore_pattern`` is an RE2 pattern (Arrow's
regex engine), not the ``regex`` module's. The 64-bit shingle hash is FNV-1a based, not simhash-py's,
so SimHash values differ from Data-Juicer's while their distances behave the same.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from pydantic import Field, model_validator

from thresher.operators.common.minhash import _char_hashes, _shingle_sets, _word_hashes
from thresher.operators.common.tokenize import _ASCII, string_buffers
from thresher.operators.dedup.clusters import choose_keepers, components, mark_clusters, size_histogram
from thresher.operators.dedup.exact import keep_value
from thresher.pipeline.columns import ROW, SHARD, drop_decisions
from thresher.pipeline.ops import GlobalOp, OpParams, Resources
from thresher.pipeline.registry import register

MAX_BLOCK_KEYS = 1024  # block combinations (C(num_blocks, hamming_distance)) allowed


@njit(cache=True, inline="always")
def _fmix64(h):
    """MurmurHash3's 64-bit finaliser: every output bit depends on every input bit."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True)
def _simhash(shingles, per_doc):
    """Per document, bit j of the SimHash is set when more than half of its (finalised) shingle
    hashes have bit j set (simhash-py's ``compute``: +1 per set bit, -1 per clear bit, > 0)."""
    n = len(per_doc)
    out = np.zeros(n, dtype=np.uint64)
    ones = np.zeros(64, dtype=np.int64)
    pos = 0
    for d in range(n):
        c = per_doc[d]
        ones[:] = 0
        for s in range(pos, pos + c):
            h = _fmix64(shingles[s])
            for b in range(64):
                ones[b] += np.int64((h >> np.uint64(b)) & np.uint64(1))
        r = np.uint64(0)
        for b in range(64):
            if 2 * ones[b] > c:
                r |= np.uint64(1) << np.uint64(b)
        out[d] = r
        pos += c
    return out


def simhashes(text: pa.Array | pa.ChunkedArray, window: int = 6, tokenization: str = "space",
              lowercase: bool = True, ignore_pattern: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit SimHash of each document, shingles per document) over word or character shingles."""
    if lowercase:
        text = pc.utf8_lower(text)
    if ignore_pattern:
        text = pc.replace_substring_regex(text, ignore_pattern, "")
    data, offsets = string_buffers(text)
    if tokenization == "space":
        words, counts = _word_hashes(data, offsets, _ASCII)
        shingles, per = _shingle_sets(words, counts, window)
    else:
        shingles, per = _char_hashes(data, offsets, window)
    return _simhash(shingles, per), per


def blocks(num_blocks: int) -> list[tuple[int, int]]:
    """(first bit, width) of each block: the 64 bits cut into ``num_blocks`` runs, the first
    ``64 % num_blocks`` one bit wider."""
    widths = [64 // num_blocks + (1 if i < 64 % num_blocks else 0) for i in range(num_blocks)]
    return [(sum(widths[:i]), w) for i, w in enumerate(widths)]


def block_orders(num_blocks: int, hamming_distance: int) -> list[list[tuple[int, int]]]:
    """One block order per way of choosing ``num_blocks - hamming_distance`` blocks: the chosen ones
    first (they make the bucketing key), then the others. Two hashes within ``hamming_distance`` bits
    agree on all the chosen blocks of at least one order (pigeonhole)."""
    bs = blocks(num_blocks)
    return [[bs[i] for i in chosen] + [bs[i] for i in range(num_blocks) if i not in chosen]
            for chosen in itertools.combinations(range(num_blocks), num_blocks - hamming_distance)]


def block_masks(num_blocks: int, hamming_distance: int) -> list[int]:
    """The bits each bucketing key is made of (one mask per block order)."""
    k = num_blocks - hamming_distance
    return [sum(((1 << w) - 1) << s for s, w in order[:k]) for order in block_orders(num_blocks, hamming_distance)]


def permute(hashes: np.ndarray, order: list[tuple[int, int]]) -> np.ndarray:
    """The hashes with their blocks moved into ``order`` from the top bit down (Manku et al.'s
    permuted tables): sorting them puts hashes that agree on the leading blocks next to each other,
    and a bit permutation leaves every Hamming distance as it was."""
    out = np.zeros(len(hashes), dtype=np.uint64)
    top = 64
    for start, width in order:
        top -= width
        out |= ((hashes >> np.uint64(start)) & np.uint64((1 << width) - 1)) << np.uint64(top)
    return out


def unpermute(permuted: np.ndarray, order: list[tuple[int, int]]) -> np.ndarray:
    """``permute``'s inverse."""
    out = np.zeros(len(permuted), dtype=np.uint64)
    top = 64
    for start, width in order:
        top -= width
        out |= ((permuted >> np.uint64(top)) & np.uint64((1 << width) - 1)) << np.uint64(start)
    return out


@njit(cache=True, inline="always")
def _popcount(x):
    """Set bits of a uint64 (SWAR, as in "Hacker's Delight" 5-1)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True)
def popcounts(x):
    """Set bits of each uint64."""
    out = np.empty(len(x), dtype=np.int64)
    for i in range(len(x)):
        out[i] = _popcount(x[i])
    return out


@njit(cache=True)
def _bucket_pairs(sorted_hashes, key_shift, max_distance):
    """Permuted hashes, sorted: every pair inside a run of equal keys (the bits above ``key_shift``)
    is a candidate; those within ``max_distance`` bits are returned (as permuted hashes), with the
    number of candidates. Only verified pairs are stored, so memory follows the answer."""
    n = len(sorted_hashes)
    shift = np.uint64(key_shift)
    cap = 1024
    out_a = np.empty(cap, dtype=np.uint64)
    out_b = np.empty(cap, dtype=np.uint64)
    m = 0
    candidates = 0
    start = 0
    while start < n:
        key = sorted_hashes[start] >> shift
        end = start + 1
        while end < n and (sorted_hashes[end] >> shift) == key:
            end += 1
        for i in range(start, end):
            for j in range(i + 1, end):
                candidates += 1
                if _popcount(sorted_hashes[i] ^ sorted_hashes[j]) <= max_distance:
                    if m == cap:
                        cap *= 2
                        na = np.empty(cap, dtype=np.uint64)
                        nb = np.empty(cap, dtype=np.uint64)
                        na[:m] = out_a[:m]
                        nb[:m] = out_b[:m]
                        out_a, out_b = na, nb
                    out_a[m] = sorted_hashes[i]
                    out_b[m] = sorted_hashes[j]
                    m += 1
        start = end
    return out_a[:m], out_b[:m], candidates


def near_pairs(reps: np.ndarray, hashes: np.ndarray, num_blocks: int, max_distance: int
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """(a, b, candidates): pairs of distinct SimHashes (given by their row ids ``reps``, a < b) that
    differ in at most ``max_distance`` bits. Per block order, the permuted hashes are sorted (one
    numpy sort) and a compiled pass compares the hashes inside each run of equal leading blocks;
    ``candidates`` counts the pairs compared (a pair that shares several keys counts each time)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    by_hash = np.argsort(hashes)
    table, table_reps = hashes[by_hash], np.asarray(reps, dtype=np.int64)[by_hash]
    k = num_blocks - max_distance
    src, dst, candidates = [], [], 0
    for order in block_orders(num_blocks, max_distance):
        permuted = np.sort(permute(hashes, order))
        a, b, c = _bucket_pairs(permuted, 64 - sum(w for _, w in order[:k]), max_distance)
        candidates += c
        if len(a):
            src.append(table_reps[np.searchsorted(table, unpermute(a, order))])
            dst.append(table_reps[np.searchsorted(table, unpermute(b, order))])
    if not src:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, candidates
    s, d = np.concatenate(src), np.concatenate(dst)
    pairs = np.unique(np.stack([np.minimum(s, d), np.maximum(s, d)], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1], candidates


_GID = ((pl.col(SHARD).cast(pl.Int64) * (1 << 32)) + pl.col(ROW)).alias("gid")  # input order


@register
class SimHashDedup(GlobalOp):
    """Remove (or mark) near-duplicates by 64-bit SimHash: documents whose SimHashes differ in at most
    hamming_distance bits form clusters, and one row of each stays (Data-Juicer's
    document_simhash_deduplicator)."""

    name = "simhash_dedup"
    resources = Resources(cpus=1.0, memory_mb=1024)
    metrics = {"clusters": "clusters of near-duplicates",
               "candidate_pairs": "pairs of distinct SimHashes that shared a block key (once per block combination)",
               "verified_pairs": "pairs of distinct SimHashes within hamming_distance bits",
               "same_simhash_rows": "rows whose SimHash equals an earlier row's"}

    class Params(OpParams):
        field: str | None = Field(None, description="column to compare (default: the recipe's text column)")
        tokenization: Literal["space", "character"] = Field(
            "space", description="shingles of whitespace-separated words, or of characters (Data-Juicer: space; "
            "character for languages written without spaces)")
        window_size: int = Field(6, ge=1, description="words (or characters) per shingle (Data-Juicer: 6)")
        lowercase: bool = Field(True, description="compare the text in lower case (Data-Juicer: true)")
        ignore_pattern: str | None = Field(None, description="remove the substrings matching this RE2 pattern "
                                                             "before shingling (e.g. '\\p{P}' for punctuation)")
        num_blocks: int = Field(6, ge=1, le=64, description="blocks the 64 bits are cut into for bucketing "
                                                            "(Data-Juicer: 6); must exceed hamming_distance")
        hamming_distance: int = Field(4, ge=0, le=63, description="most bits two near-duplicates' SimHashes may "
                                                                  "differ in (Data-Juicer: 4)")
        keep: Literal["first", "longest", "column"] = Field("first", description="which row of a cluster stays")
        keep_column: str | None = Field(None, description="with keep: column, the row with the highest value stays")
        mode: Literal["remove", "mark"] = Field("remove", description="remove duplicates, or keep all and add "
                                                                      "dup_cluster / is_duplicate")

        @model_validator(mode="after")
        def _check(self):
            if self.hamming_distance >= self.num_blocks:
                raise ValueError(f"hamming_distance ({self.hamming_distance}) must be less than num_blocks "
                                 f"({self.num_blocks}): blocks are what finds the candidates")
            if math.comb(self.num_blocks, self.hamming_distance) > MAX_BLOCK_KEYS:
                raise ValueError(f"num_blocks {self.num_blocks} with hamming_distance {self.hamming_distance} makes "
                                 f"{math.comb(self.num_blocks, self.hamming_distance)} block keys (at most "
                                 f"{MAX_BLOCK_KEYS}); use fewer blocks")
            if self.keep == "column" and not self.keep_column:
                raise ValueError("keep: column needs keep_column")
            return self

    example = {"window_size": 6, "num_blocks": 6, "hamming_distance": 4}

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        key = p.field or self.text_key
        sim, per = simhashes(batch[key], p.window_size, p.tokenization, p.lowercase, p.ignore_pattern)
        cols = {"simhash": pa.array(sim, pa.uint64()), "empty": pa.array(per == 0)}
        value = keep_value(batch, p, key)
        if value is not None:
            cols["value"] = value
        return pa.table(cols)

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        p = self.params
        rows = fingerprints.filter(~pl.col("empty")).select(_GID, pl.col("simhash")).collect()
        # rows with the same SimHash: a star from the earliest one (distance 0)
        reps = rows.group_by("simhash").agg(pl.col("gid").min().alias("rep"))
        same = rows.join(reps, on="simhash").filter(pl.col("gid") != pl.col("rep"))
        self.record("same_simhash_rows", same.height)
        a, b, candidates = near_pairs(reps["rep"].to_numpy(), reps["simhash"].to_numpy(), p.num_blocks,
                                      p.hamming_distance)
        self.record("candidate_pairs", candidates)
        self.record("verified_pairs", len(a))
        comp = components(np.concatenate([same["rep"].to_numpy(), a]).astype(np.int64),
                          np.concatenate([same["gid"].to_numpy(), b]).astype(np.int64))
        score = None
        if p.keep != "first":
            score = (fingerprints.select(_GID, pl.col("value")).collect()).join(comp.select("gid"), on="gid", how="semi")
        return self._decide(comp, score)

    def _decide(self, comp: pl.DataFrame, score: pl.DataFrame | None) -> pl.DataFrame:
        """Clusters -> keep policy -> decisions (remove) or cluster columns for apply (mark)."""
        p = self.params
        clusters = choose_keepers(comp, p.keep, score)
        self.record("clusters", clusters["root"].n_unique() if clusters.height else 0)
        for k, v in size_histogram(clusters).items():
            self.record(k, v)
        if clusters.height:
            sizes = clusters.group_by("root").len()["len"].value_counts()
            self.record_distribution("cluster_size", dict(zip(sizes[sizes.columns[0]].to_list(),
                                                              sizes["count"].to_list(), strict=True)))
        local = clusters.with_columns((pl.col("gid") // (1 << 32)).cast(pl.Int32).alias(SHARD),
                                      (pl.col("gid") % (1 << 32)).alias(ROW))
        if p.mode == "mark":
            self.state = local.select(SHARD, ROW, pl.col("keeper").alias("dup_cluster"),
                                      (pl.col("gid") != pl.col("keeper")).alias("is_duplicate"))
            return drop_decisions(local.head(0), "")
        return drop_decisions(local.filter(pl.col("gid") != pl.col("keeper")), "near_duplicate")

    def apply(self, batch: pa.Table, shard: int, rows: np.ndarray):
        if self.params.mode != "mark":
            return batch
        return mark_clusters(batch, self.state, shard, rows)
