"""Near-duplicate removal with MinHash-LSH (Broder 1997; Leskovec, Rajaraman & Ullman, "Mining of
Massive Datasets", ch. 3), memory-bounded and incremental.

fingerprint: shingle every document (word or character n-grams), compute a ``num_perm`` MinHash
signature and ``bands`` LSH band keys for the whole batch in compiled code.
resolve: band keys are read once and spilled to raw record files partitioned by hash, so memory is
bounded by a partition rather than the corpus; documents that share a band key in a partition
become candidate edges; candidates are optionally verified (estimated Jaccard from signatures read
once in input order, each held only while a pair of its row is open, or exact shingle Jaccard);
connected components (union-find) are clusters; a keep policy picks one row per cluster.
An index (band keys and signatures of the kept rows) can be saved and used to deduplicate new data
against an old corpus without reading it again.
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, model_validator

from thresher.operators.common.minhash import (
    band_keys,
    jaccard_pairs,
    optimal_params,
    permutations,
    shingle_sets,
    signatures,
)
from thresher.operators.dedup.clusters import choose_keepers, components, mark_clusters, size_histogram
from thresher.operators.dedup.exact import keep_value
from thresher.pipeline.columns import ROW, SHARD, drop_decisions
from thresher.pipeline.executors.passes import fingerprint_pieces
from thresher.pipeline.ops import GlobalOp, OpParams, Resources
from thresher.pipeline.registry import register

ROWS_PER_PARTITION = 2_000_000  # band-key rows per spill partition (~36 MB of records; ~150 MB to sort)
SPILL_ROWS = 1_000_000  # band-key rows gathered before they are split among the partition files
VERIFY_CHUNK = 50_000  # candidate pairs compared at a time
EDGE_COMPACT = 1_000_000  # candidate edges gathered from partitions before duplicates among them are merged
_BAND_ROW = np.dtype([("key", "<u8"), ("gid", "<i8"), ("band", "<u2")])  # one spilled band-key row: 18 bytes
READ_AHEAD = 2  # fingerprint files read ahead of the one in use (fingerprint_batches; 1: ~1 s more per GB)
ALL_PAIRS_MAX = 16  # buckets up to this size contribute all pairs for verification; larger ones a star


@register
class MinHashDedup(GlobalOp):
    """Remove (or mark) near-duplicates with MinHash-LSH: seeded signatures, LSH bands, optional
    verification, union-find clusters, a keep policy; memory-bounded and incremental."""

    name = "minhash_dedup"
    resources = Resources(cpus=1.0, memory_mb=2048)
    metrics = {"clusters": "clusters of near-duplicates", "candidate_pairs": "candidate pairs from band collisions",
               "verified_pairs": "pairs that passed verification"}

    class Params(OpParams):
        threshold: float = Field(0.8, gt=0, lt=1, description="Jaccard similarity that makes a duplicate")
        field: str | None = Field(None, description="column to compare (default: the recipe's text column)")
        num_perm: int = Field(128, ge=8, le=1024, description="hash functions per signature")
        bands: int | None = Field(None, ge=1, description="LSH bands (default: chosen from threshold, as datasketch does)")
        false_negative_weight: float | None = Field(
            None, gt=0, lt=1, description="weight of missed pairs when choosing bands x rows (false positives get 1 - it); "
            "default 0.9 when candidates are verified (verification removes the extra false positives), else 0.5")
        rows: int | None = Field(None, ge=1, description="rows per band (with bands)")
        shingle: Literal["word", "char"] = Field("word", description="word or character n-grams")
        ngram: int = Field(5, ge=1, description="n-gram size (words or characters)")
        verify: Literal["none", "signature", "exact"] = Field(
            "signature", description="check candidate pairs: estimated Jaccard from signatures, or exact shingle Jaccard")
        keep: Literal["first", "longest", "column"] = Field("first", description="which row of a cluster stays")
        keep_column: str | None = Field(None, description="with keep: column, the row with the highest value stays")
        mode: Literal["remove", "mark"] = Field("remove", description="remove duplicates, or keep all and add dup_cluster / is_duplicate")
        index_path: str | None = Field(None, description="deduplicate against this saved index, and save the updated index there")

        @model_validator(mode="after")
        def _check(self):
            if (self.bands is None) != (self.rows is None):
                raise ValueError("give both bands and rows, or neither")
            if self.bands is not None and self.bands * self.rows > self.num_perm:
                raise ValueError(f"bands x rows ({self.bands * self.rows}) exceeds num_perm ({self.num_perm})")
            if self.keep == "column" and not self.keep_column:
                raise ValueError("keep: column needs keep_column")
            return self

    example = {"threshold": 0.8, "num_perm": 128, "ngram": 5, "verify": "signature"}

    def __init__(self, params=None, ctx=None):
        super().__init__(params, ctx)
        p = self.params
        fn = p.false_negative_weight if p.false_negative_weight is not None else (0.9 if p.verify != "none" else 0.5)
        self.band_count, self.band_rows = (p.bands, p.rows) if p.bands else optimal_params(p.threshold, p.num_perm, 1 - fn, fn)
        self._a, self._b = permutations(p.num_perm, self.ctx.seed)

    # ---------------------------------------------------------------------------- fingerprint
    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        text = batch[p.field or self.text_key]
        sig = signatures(text, p.ngram, self._a, self._b, p.shingle)
        keys = band_keys(sig, self.band_count, self.band_rows)
        empty = (sig == np.uint32(0xFFFFFFFF)).all(axis=1)
        cols = {"bands": pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel()), self.band_count),
                "empty": pa.array(empty)}
        if p.verify == "signature":
            cols["sig"] = pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), p.num_perm)
        elif p.verify == "exact":
            cols["shingles"] = pa.array(shingle_sets(text, p.ngram, p.shingle), pa.list_(pa.uint64()))
        value = keep_value(batch, p, p.field or self.text_key)
        if value is not None:
            cols["value"] = value
        return pa.table(cols)

    # ---------------------------------------------------------------------------- resolve
    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        p = self.params
        with tempfile.TemporaryDirectory(prefix="thresher-lsh-") as tmp:
            edges = self._candidate_edges(fingerprints, Path(tmp))
        self.record("candidate_pairs", len(edges[0]))
        if p.verify != "none" and len(edges[0]):
            edges = self._verify(fingerprints, *edges)
        self.record("verified_pairs", len(edges[0]))
        comp = components(*edges)
        score = None
        if p.keep != "first":
            score = (fingerprints.select(_GID, pl.col("value")).collect()).join(comp.select("gid"), on="gid", how="semi")
        return self._decide(comp, score, fingerprints)

    def resolve_distributed(self, fingerprints, shuffle):
        """The same algorithm as ``resolve`` as Ray Data shuffles: band keys hash-partitioned, candidate
        edges per partition, verification by two partitioned joins with the signatures, connected
        components by large-star/small-star; only rows that are in a cluster reach the driver. Each
        use reads only the fingerprint columns it needs (``shuffle.select``: fingerprint files are read
        by the tasks that use them), and declares how much its rows grow (the band rows: 20 bytes per
        8-byte key), so the shuffle's rounds fit the object store (``ray_shuffle``)."""
        p = self.params
        if p.index_path:
            return None  # the incremental index is read and rewritten in the driver

        def fp(*cols: str):
            return shuffle.map(shuffle.select(fingerprints, [SHARD, ROW, *cols]), _with_gid)

        bands = shuffle.map(fp("empty", "bands"), functools.partial(_band_rows_of, self.band_count), grow=2.5)
        edges = shuffle.group(bands, "key", functools.partial(bucket_edges, all_pairs=p.verify != "none"))
        edges = shuffle.group(edges, "s", _unique).materialize()  # a pair found in several bands counts once
        self.record("candidate_pairs", shuffle.count(edges))
        if p.verify != "none":
            col = "sig" if p.verify == "signature" else "shingles"
            kind = pl.List(pl.UInt32) if col == "sig" else pl.List(pl.UInt64)  # variable-size lists shuffle safely
            # only rows on a candidate edge take part in the joins: their gids, collected (the driver
            # holds as many at the end, the components), filter the signatures before they shuffle
            nodes = shuffle.collect(shuffle.map(edges, _endpoints), {"gid": pl.Int64})["gid"].unique().sort()
            rows = shuffle.count(shuffle.select(fingerprints, [ROW]))
            payload = shuffle.map(fp(col), functools.partial(_payload, col, nodes.to_numpy()),
                                  grow=min(1.0, len(nodes) / max(1, rows)))
            edge_schema, payload_schema = {"s": pl.Int64, "d": pl.Int64}, {"gid": pl.Int64, col: kind}
            left = shuffle.co_group(edges, payload, "s", "gid", edge_schema, payload_schema,
                                    functools.partial(_attach, col, "s", "left"))
            edges = shuffle.co_group(left, payload, "d", "gid", {**edge_schema, "left": kind}, payload_schema,
                                     functools.partial(_verified, col, p.threshold)).materialize()
        self.record("verified_pairs", shuffle.count(edges))
        comp_ds = shuffle.components(edges, local=components)  # small graphs: union-find in one task
        score = None
        comp_schema = {"gid": pl.Int64, "root": pl.Int64}
        if p.keep == "first":
            comp = shuffle.collect(comp_ds, comp_schema)
        else:
            values = shuffle.map(fp("value"), functools.partial(_select, ["gid", "value"]))
            joined = shuffle.co_group(comp_ds, values, "gid", "gid", comp_schema, {"gid": pl.Int64, "value": pl.Float64},
                                      _with_value)
            both = shuffle.collect(joined, {**comp_schema, "value": pl.Float64})
            comp, score = both.select("gid", "root"), both.select("gid", "value")
        return self._decide(comp.sort("gid"), score, None)

    def _decide(self, comp: pl.DataFrame, score: pl.DataFrame | None, fingerprints: pl.LazyFrame | None) -> pl.DataFrame:
        """Clusters -> keep policy -> decisions (remove) or cluster columns (mark); saves the index."""
        p = self.params
        clusters = choose_keepers(comp, p.keep, score)
        self.record("clusters", clusters["root"].n_unique() if clusters.height else 0)
        for k, v in size_histogram(clusters).items():
            self.record(k, v)
        if clusters.height:
            sizes = clusters.group_by("root").len()["len"].value_counts()
            self.record_distribution("cluster_size", dict(zip(sizes[sizes.columns[0]].to_list(), sizes["count"].to_list(),
                                                              strict=True)))
        if p.index_path:
            self._save_index(fingerprints, clusters)
        local = clusters.filter(pl.col("gid") >= 0).with_columns(
            (pl.col("gid") // (1 << 32)).cast(pl.Int32).alias(SHARD), (pl.col("gid") % (1 << 32)).alias(ROW))
        if p.mode == "mark":
            self.state = local.select(SHARD, ROW, pl.col("keeper").alias("dup_cluster"),
                                      (pl.col("gid") != pl.col("keeper")).alias("is_duplicate"))
            return drop_decisions(local.head(0), "")
        return drop_decisions(local.filter(pl.col("gid") != pl.col("keeper")),
                              pl.when(pl.col("keeper") < 0).then(pl.lit("near_duplicate_of_index"))
                              .otherwise(pl.lit("near_duplicate")))

    def _band_batches(self, fingerprints: pl.LazyFrame):
        """(gid, band, key) record arrays of every band of this run's non-empty rows, read once in
        streaming batches (all bands of a batch together), then the saved index's (negative gids)."""
        bands = self.band_count
        for df in fingerprint_batches(fingerprints, lambda f: f.filter(~pl.col("empty")).select(_GID, "bands")):
            if df.height:
                out = np.empty((df.height, bands), _BAND_ROW)
                out["gid"] = df["gid"].to_numpy()[:, None]
                out["band"] = np.arange(bands, dtype=np.uint16)
                out["key"] = df["bands"].to_numpy()
                yield out.ravel()
        idx = self._index_file("bands.parquet")
        if idx is not None:
            for df in _batches(pl.scan_parquet(idx).select("gid", "band", "key")):
                out = np.empty(df.height, _BAND_ROW)
                for c in _BAND_ROW.names:
                    out[c] = df[c].to_numpy()
                yield out

    def _candidate_edges(self, fingerprints: pl.LazyFrame, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
        """Band keys in hash partitions of at most ~ROWS_PER_PARTITION rows (spilled to raw record
        files above one partition), then candidate edges partition by partition. The fingerprints
        are read once, batch by batch, so memory is bounded by a partition, not the corpus; a bucket
        (band, key) never spans two partitions, so the edges do not depend on the partitioning."""
        n_rows = fingerprints.filter(~pl.col("empty")).select(pl.len()).collect().item() * self.band_count
        idx = self._index_file("bands.parquet")
        if idx is not None:
            n_rows += pl.scan_parquet(idx).select(pl.len()).collect().item()
        parts = max(1, math.ceil(n_rows / ROWS_PER_PARTITION))
        all_pairs = self.params.verify != "none"
        held: list[np.ndarray] = []  # one partition: the records stay in memory
        files = [tmp / f"part-{i:04d}.bin" for i in range(parts)] if parts > 1 else []
        sinks = [open(f, "ab") for f in files]  # noqa: SIM115 -- closed below
        try:
            pending, size = [], 0
            for rec in self._band_batches(fingerprints):
                if not sinks:
                    held.append(rec)
                    continue
                pending.append(rec)
                size += len(rec)
                if size >= SPILL_ROWS:
                    _spill(np.concatenate(pending), sinks)
                    pending, size = [], 0
            if pending:
                _spill(np.concatenate(pending), sinks)
        finally:
            for f in sinks:
                f.close()
        if not sinks:
            pairs = bucket_edges_of(np.concatenate(held) if held else np.empty(0, _BAND_ROW), all_pairs)
            del held
        else:  # a pair sharing keys in several bands comes from several partitions: merged as they come
            found, rows, bound = [], 0, EDGE_COMPACT
            for f in files:
                found.append(bucket_edges_of(np.fromfile(f, _BAND_ROW), all_pairs))
                f.unlink()
                rows += found[-1].height
                if rows > bound:
                    found = [pl.concat(found).unique()]
                    rows = found[0].height
                    bound = max(bound, 2 * rows)
            pairs = pl.concat(found).unique()
        pairs = pairs.sort(["s", "d"])
        return pairs["s"].to_numpy(), pairs["d"].to_numpy()

    def _verify(self, fingerprints: pl.LazyFrame, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep the candidate pairs whose estimated (signature) or exact (shingle) Jaccard reaches
        the threshold. Signatures are read batch by batch (the saved index's first, then the run's
        in input order); a row's signature is held only from when it is read until its last
        candidate pair is decided (``SignatureWindow``), so memory follows the duplicates' spread
        in the input, not its size."""
        p = self.params
        if p.verify != "signature":
            return self._verify_shingles(fingerprints, src, dst)
        window = SignatureWindow(src, dst, p.num_perm, p.threshold)
        idx = self._index_file("sigs.parquet")
        indexed = _batches(pl.scan_parquet(idx).select("gid", "sig")) if idx is not None else ()
        for df in itertools.chain(indexed, fingerprint_batches(fingerprints, lambda f: f.select(_GID, "sig"))):
            window.add(df["gid"].to_numpy(), df["sig"])
        return src[window.keep], dst[window.keep]

    def _verify_shingles(self, fingerprints: pl.LazyFrame, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact shingle-set Jaccard of the candidate pairs (the index keeps no shingles)."""
        p = self.params
        need = pl.DataFrame({"gid": np.unique(np.concatenate([src, dst]))})
        data = (fingerprints.select(_GID, "shingles").join(need.lazy(), on="gid", how="semi")
                .collect(engine="streaming").sort("gid"))
        gids = data["gid"].to_numpy()
        si, di = np.searchsorted(gids, src), np.searchsorted(gids, dst)
        si_ok = (si < len(gids)) & (gids[np.minimum(si, len(gids) - 1)] == src)
        di_ok = (di < len(gids)) & (gids[np.minimum(di, len(gids) - 1)] == dst)
        known = si_ok & di_ok  # an indexed row has no shingles: trust the bands
        keep = ~known
        sel = np.flatnonzero(known)
        for lo in range(0, len(sel), VERIFY_CHUNK):
            part = sel[lo:lo + VERIFY_CHUNK]
            keep[part] = pair_similarity("shingles", data["shingles"].gather(si[part]),
                                         data["shingles"].gather(di[part])) >= p.threshold
        return src[keep], dst[keep]

    # ---------------------------------------------------------------------------- index
    def _index_file(self, name: str) -> str | None:
        if not self.params.index_path:
            return None
        f = Path(self.params.index_path) / name
        return str(f) if f.exists() else None

    def _save_index(self, fingerprints: pl.LazyFrame, clusters: pl.DataFrame) -> None:
        """Band keys (and signatures) of every row this run keeps, appended to the index; new rows get
        gids below every existing one, so an indexed row always comes first."""
        root = Path(self.params.index_path)
        root.mkdir(parents=True, exist_ok=True)
        old_bands = self._index_file("bands.parquet")
        old_sigs = self._index_file("sigs.parquet")
        base = pl.read_parquet(old_bands, columns=["gid"])["gid"].min() if old_bands else 0
        dropped = clusters.filter((pl.col("gid") != pl.col("keeper")) & (pl.col("gid") >= 0)).select("gid")
        ours = (fingerprints.filter(~pl.col("empty"))
                .with_columns(_GID).join(dropped.lazy(), on="gid", how="anti"))
        # new gids: -(count) .. below the old minimum, in input order
        ours = ours.sort("gid").with_columns((pl.lit(base - 1) - pl.int_range(pl.len())).cast(pl.Int64).alias("new_gid"))
        bands = (ours.select(pl.col("new_gid").alias("gid"), pl.col("bands").arr.to_list().alias("key"))
                 .with_columns(pl.int_range(0, self.band_count, dtype=pl.Int32).implode().alias("band"))
                 .explode(["key", "band"]).collect())
        if old_bands:
            bands = pl.concat([pl.read_parquet(old_bands), bands])
        _atomic_parquet(bands, root / "bands.parquet")
        if self.params.verify == "signature":
            sigs = ours.select(pl.col("new_gid").alias("gid"), "sig").collect()
            if old_sigs:
                sigs = pl.concat([pl.read_parquet(old_sigs), sigs])
            _atomic_parquet(sigs, root / "sigs.parquet")

    # ---------------------------------------------------------------------------- apply (mark)
    def apply(self, batch: pa.Table, shard: int, rows: np.ndarray):
        if self.params.mode != "mark":
            return batch
        return mark_clusters(batch, self.state, shard, rows)


_GID = ((pl.col(SHARD).cast(pl.Int64) * (1 << 32)) + pl.col(ROW)).alias("gid")  # input order
_NO_EDGES = pl.DataFrame(schema={"s": pl.Int64, "d": pl.Int64})


def bucket_edges(df: pl.DataFrame, all_pairs: bool) -> pl.DataFrame:
    """Candidate edges (s, d) among rows (gid, band, key) that share a band key."""
    if df.height == 0:
        return _NO_EDGES
    return _edges_by_sort(df["gid"].to_numpy(), df["band"].to_numpy(), df["key"].to_numpy(), all_pairs)


def bucket_edges_of(rec: np.ndarray, all_pairs: bool) -> pl.DataFrame:
    """``bucket_edges`` of band-key records (``_BAND_ROW``)."""
    if len(rec) == 0:
        return _NO_EDGES
    return _edges_by_sort(rec["gid"], rec["band"], rec["key"], all_pairs)


def _edges_by_sort(gid: np.ndarray, band: np.ndarray, key: np.ndarray, all_pairs: bool) -> pl.DataFrame:
    """One sort of the rows by (band, key, gid) finds the buckets (runs of equal keys): a hash
    group-by with a list per bucket held ~4x the partition in memory (the driver's peak in a
    MinHash resolve)."""
    order = np.lexsort((gid, key, band))
    band, key, gid = band[order], key[order], gid[order]
    del order
    start = np.ones(len(gid), dtype=bool)
    start[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    del band, key
    starts = np.flatnonzero(start)
    lengths = np.diff(np.append(starts, len(gid)))
    multi = lengths > 1
    if not multi.any():
        return _NO_EDGES
    flat = gid[np.repeat(multi, lengths)]
    s, d = _bucket_edges(flat, lengths[multi], all_pairs)
    return pl.DataFrame({"s": s, "d": d}, schema=_NO_EDGES.schema).unique()


class SignatureWindow:
    """Signature verification of candidate pairs with the signatures read once, in batches:
    a pair is decided as soon as both its rows have been read, and a row's signature is
    dropped once all its pairs are decided. Reading in input order, a row is held from its
    first read until its last partner is read, so the memory is bounded by the rows whose
    pairs are still open (near-duplicates planted far apart keep more open; the worst case
    is every row on a candidate pair, what a full gather holds). Pairs with a row that is
    never read (an indexed row saved without its signature) stay undecided and are kept
    (the bands are trusted). Same estimate as ``pair_similarity``: the share of equal values."""

    CHUNK = 16_384  # signature slots are allocated in chunks of this many rows

    def __init__(self, src: np.ndarray, dst: np.ndarray, num_perm: int, threshold: float):
        self.need = np.unique(np.concatenate([src, dst]))
        n, m = len(self.need), len(src)
        self.si, self.di = np.searchsorted(self.need, src), np.searchsorted(self.need, dst)
        ends = np.concatenate([self.si, self.di])  # CSR: node -> its pairs
        self.order = np.argsort(ends, kind="stable") % max(m, 1)
        self.start = np.concatenate([[0], np.cumsum(np.bincount(ends, minlength=n))])
        self.open = np.bincount(ends, minlength=n)  # undecided pairs per node
        self.slot = np.full(n, -1, np.int64)
        self.keep = np.ones(m, bool)
        self.decided = np.zeros(m, bool)
        self.num_perm, self.threshold = num_perm, threshold
        self.pool: list[np.ndarray] = []
        self.free = np.empty(0, np.int64)
        self.peak_held = 0  # most signatures held at once

    def add(self, gids: np.ndarray, sig: pl.Series) -> None:
        if len(self.need) == 0 or len(gids) == 0:
            return
        pos = np.minimum(np.searchsorted(self.need, gids), len(self.need) - 1)
        hit = np.flatnonzero(self.need[pos] == gids)  # rows of the batch that are on a pair
        fresh = (self.slot[pos[hit]] < 0) & (self.open[pos[hit]] > 0)
        hit = hit[fresh]
        nodes = pos[hit]
        if len(nodes) == 0:
            return
        rows = _matrix(sig.gather(hit))
        self._hold(nodes, rows)
        counts = self.start[nodes + 1] - self.start[nodes]  # the pairs of the rows just read
        idx = np.repeat(self.start[nodes] - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        pairs = np.unique(self.order[idx])
        pairs = pairs[~self.decided[pairs]]
        a, b = self.slot[self.si[pairs]], self.slot[self.di[pairs]]
        ready = (a >= 0) & (b >= 0)
        pairs, a, b = pairs[ready], a[ready], b[ready]
        for lo in range(0, len(pairs), VERIFY_CHUNK):
            sl = slice(lo, lo + VERIFY_CHUNK)
            self.keep[pairs[sl]] = (self._rows(a[sl]) == self._rows(b[sl])).mean(axis=1) >= self.threshold
        self.decided[pairs] = True
        np.subtract.at(self.open, self.si[pairs], 1)
        np.subtract.at(self.open, self.di[pairs], 1)
        done = np.unique(np.concatenate([self.si[pairs], self.di[pairs]]))
        done = done[self.open[done] == 0]
        self.free = np.concatenate([self.free, self.slot[done]])
        self.slot[done] = -1

    def _hold(self, nodes: np.ndarray, rows: np.ndarray) -> None:
        while len(self.free) < len(nodes):
            base = len(self.pool) * self.CHUNK
            self.pool.append(np.empty((self.CHUNK, self.num_perm), np.uint32))
            self.free = np.concatenate([self.free, np.arange(base, base + self.CHUNK)])
        slots, self.free = self.free[-len(nodes):], self.free[:-len(nodes)]
        self.peak_held = max(self.peak_held, len(self.pool) * self.CHUNK - len(self.free))
        self.slot[nodes] = slots
        for c in np.unique(slots // self.CHUNK):
            m = slots // self.CHUNK == c
            self.pool[c][slots[m] % self.CHUNK] = rows[m]

    def _rows(self, slots: np.ndarray) -> np.ndarray:
        out = np.empty((len(slots), self.num_perm), np.uint32)
        for c in np.unique(slots // self.CHUNK):
            m = slots // self.CHUNK == c
            out[m] = self.pool[c][slots[m] % self.CHUNK]
        return out


def fingerprint_batches(fingerprints: pl.LazyFrame, select: Callable[[pl.LazyFrame], pl.LazyFrame]):
    """``select(fingerprints)``'s rows in input order, one fingerprint file at a time (the files of
    ``passes.fingerprint_pieces``), the next ``READ_AHEAD`` files read in threads while this one is
    used: memory is bounded by a few files' worth of the selected columns. Polars' streaming
    ``collect_batches`` (and ``sink_batches``) have no backpressure: its reader runs ahead of a
    slower consumer and queues the batches, up to the whole column (a 3 GB MinHash-only run's
    signatures: ~0.5 GB held in the driver when the consumer was slowed; docs/benchmarks.md, "Scale
    on one small machine"). A frame that is not a fingerprint frame, or a file without the columns (a
    shard that fingerprinted no rows writes only the row ids), is read the old way, in one query."""
    pieces = [select(f) for f in fingerprint_pieces(fingerprints)]
    try:
        for f in pieces:
            f.collect_schema()
    except pl.exceptions.ColumnNotFoundError:
        pieces = []
    if len(pieces) < 2:
        yield from _batches(select(fingerprints))
        return
    ahead = READ_AHEAD
    with ThreadPoolExecutor(ahead, thread_name_prefix="thresher-fp") as pool:
        reading = collections.deque(pool.submit(_collect, f) for f in pieces[:ahead])
        for f in pieces[ahead:]:
            df = reading.popleft().result()
            reading.append(pool.submit(_collect, f))
            yield df
            del df
        while reading:
            yield reading.popleft().result()


def _collect(frame: pl.LazyFrame) -> pl.DataFrame:
    return frame.collect()


def _batches(frame: pl.LazyFrame):
    """The frame's rows in streaming batches, in order (``LazyFrame.collect_batches``, polars 2.x
    has it; a polars without it collects the whole frame first)."""
    if hasattr(frame, "collect_batches"):
        yield from frame.collect_batches(maintain_order=True)
    else:
        yield from frame.collect(engine="streaming").iter_slices(65_536)


def _spill(rec: np.ndarray, sinks: list) -> None:
    """Append band-key records to their partition files (partition = key mod the file count)."""
    part = (rec["key"] % np.uint64(len(sinks))).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(len(sinks) + 1))
    rec = rec[order]
    for i, sink in enumerate(sinks):
        if bounds[i + 1] > bounds[i]:
            rec[bounds[i]:bounds[i + 1]].tofile(sink)


def pair_similarity(col: str, left: pl.Series, right: pl.Series) -> np.ndarray:
    """Estimated Jaccard of aligned signature pairs (share of equal hash values), or the exact
    Jaccard of aligned shingle-set pairs."""
    if col == "sig":
        return (_matrix(left) == _matrix(right)).mean(axis=1)
    n = len(left)
    lists = pl.concat([left, right])
    offsets = np.concatenate([[0], np.cumsum(lists.list.len().to_numpy())]).astype(np.int64)
    flat = lists.explode().drop_nulls().to_numpy().astype(np.uint64)
    return jaccard_pairs(flat, offsets, np.arange(n), np.arange(n, 2 * n))


def _matrix(sig: pl.Series) -> np.ndarray:
    """Signatures (fixed-size arrays, or lists of one length) as a rows x num_perm matrix."""
    if isinstance(sig.dtype, pl.List):
        sig = sig.list.to_array(int(sig.list.len().max() or 0)) if len(sig) else sig.cast(pl.Array(pl.UInt32, 1))
    return np.asarray(sig.to_numpy(), np.uint32)


# ------------------------------------------------------------ steps of resolve_distributed (run in Ray workers)
def _payload(col: str, nodes: np.ndarray, df: pl.DataFrame) -> pl.DataFrame:
    df = df.filter(pl.col("gid").is_in(pl.Series(nodes)))
    return df.select("gid", pl.col(col).arr.to_list() if col == "sig" else pl.col(col))


def _endpoints(edges: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([edges.select(pl.col("s").alias("gid")), edges.select(pl.col("d").alias("gid"))]).unique()


def _with_gid(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(_GID)


def _unique(df: pl.DataFrame) -> pl.DataFrame:
    return df.unique()


def _select(cols: list[str], df: pl.DataFrame) -> pl.DataFrame:
    return df.select(cols)


def _band_rows_of(bands: int, df: pl.DataFrame) -> pl.DataFrame:
    return (df.filter(~pl.col("empty")).select("gid", pl.col("bands").arr.to_list().alias("key"))
            .with_columns(pl.int_range(0, bands, dtype=pl.Int32).implode().alias("band"))
            .explode(["key", "band"]))


def _attach(col: str, on: str, name: str, edges: pl.DataFrame, payload: pl.DataFrame) -> pl.DataFrame:
    return edges.join(payload.rename({"gid": on, col: name}), on=on, how="inner")


def _verified(col: str, threshold: float, edges: pl.DataFrame, payload: pl.DataFrame) -> pl.DataFrame:
    both = _attach(col, "d", "right", edges, payload)
    if both.height == 0:
        return _NO_EDGES
    keep = pair_similarity(col, both["left"], both["right"]) >= threshold
    return both.filter(pl.Series(keep)).select("s", "d")


def _with_value(comp: pl.DataFrame, values: pl.DataFrame) -> pl.DataFrame:
    return comp.join(values, on="gid", how="left")


def _bucket_edges(flat: np.ndarray, lengths: np.ndarray, all_pairs: bool) -> tuple[np.ndarray, np.ndarray]:
    """Edges inside each bucket (``flat``: the buckets' gids one after another, each sorted, and
    ``lengths``): a star from its first (earliest) row; with verification, all pairs in small
    buckets so a failed check does not disconnect rows that are similar to each other."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    first = np.repeat(flat[starts], lengths)
    star_mask = np.ones(len(flat), dtype=bool)
    star_mask[starts] = False
    src, dst = [first[star_mask]], [flat[star_mask]]
    if all_pairs:
        for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
            if 2 < n <= ALL_PAIRS_MAX:
                members = flat[s:s + n]
                i, j = np.triu_indices(n, k=1)
                keep = i > 0  # pairs with the first row are already in the star
                src.append(members[i[keep]])
                dst.append(members[j[keep]])
    return np.concatenate(src), np.concatenate(dst)


def _atomic_parquet(df: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.write_parquet(tmp)
    os.replace(tmp, path)

