"""Near-duplicate removal with MinHash-LSH (Broder 1997; Leskovec, Rajaraman & Ullman, "Mining of
Massive Datasets", ch. 3), memory-bounded and incremental.

fingerprint: shingle every document (word or character n-grams), compute a ``num_perm`` MinHash
signature and ``bands`` LSH band keys for the whole batch in compiled code.
resolve: band keys are spilled to Parquet partitioned by hash, so memory is bounded by a partition
rather than the corpus; documents that share a band key in a partition become candidate edges;
candidates are optionally verified (estimated Jaccard from signatures, or exact shingle Jaccard);
connected components (union-find) are clusters; a keep policy picks one row per cluster.
An index (band keys and signatures of the kept rows) can be saved and used to deduplicate new data
against an old corpus without reading it again.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
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
from thresher.pipeline.ops import GlobalOp, OpParams, Resources
from thresher.pipeline.registry import register

ROWS_PER_PARTITION = 4_000_000  # band-key rows per spill partition
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
        components by large-star/small-star; only rows that are in a cluster reach the driver."""
        p = self.params
        if p.index_path:
            return None  # the incremental index is read and rewritten in the driver
        fp = shuffle.map(fingerprints, _with_gid)
        bands = shuffle.map(fp, functools.partial(_band_rows_of, self.band_count))
        edges = shuffle.group(bands, "key", functools.partial(bucket_edges, all_pairs=p.verify != "none"))
        edges = shuffle.group(edges, "s", _unique).materialize()  # a pair found in several bands counts once
        self.record("candidate_pairs", shuffle.count(edges))
        if p.verify != "none":
            col = "sig" if p.verify == "signature" else "shingles"
            kind = pl.List(pl.UInt32) if col == "sig" else pl.List(pl.UInt64)  # variable-size lists shuffle safely
            payload = shuffle.map(fp, functools.partial(_payload, col))
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
            values = shuffle.map(fp, functools.partial(_select, ["gid", "value"]))
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

    def _band_rows(self, fingerprints: pl.LazyFrame) -> list[pl.LazyFrame]:
        """(gid, band, key) frames, one band at a time (so only one band's keys are ever in memory):
        this run's rows, then the saved index's (negative gids)."""
        base = fingerprints.filter(~pl.col("empty")).select(_GID, "bands")
        frames = [base.select("gid", pl.lit(i, dtype=pl.Int32).alias("band"), pl.col("bands").arr.get(i).alias("key"))
                  for i in range(self.band_count)]
        idx = self._index_file("bands.parquet")
        if idx is not None:
            frames.append(pl.scan_parquet(idx).select("gid", "band", "key"))
        return frames

    def _candidate_edges(self, fingerprints: pl.LazyFrame, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
        """Spill band keys to partitions by key hash, then collect edges partition by partition."""
        frames = self._band_rows(fingerprints)
        n_rows = frames[0].select(pl.len()).collect().item() * self.band_count
        if len(frames) > self.band_count:
            n_rows += frames[-1].select(pl.len()).collect().item()
        parts = max(1, math.ceil(n_rows / ROWS_PER_PARTITION))
        all_pairs = self.params.verify != "none"
        if parts == 1:  # no spill: one band's keys at a time (a bucket never spans two bands)
            index = frames[self.band_count:]
            found = []
            for i, frame in enumerate(frames[:self.band_count]):
                rows = frame.collect(engine="streaming")
                if index:
                    rows = pl.concat([rows, index[0].filter(pl.col("band") == i).collect()], how="vertical_relaxed")
                found.append(bucket_edges(rows, all_pairs))
            pairs = pl.concat(found).unique().sort(["s", "d"])
            return pairs["s"].to_numpy(), pairs["d"].to_numpy()
        writers: dict[int, pq.ParquetWriter] = {}
        for frame in frames:
            for batch in frame.collect(engine="streaming").iter_slices(1_000_000):
                if parts > 1:
                    batch = batch.with_columns((pl.col("key") % parts).cast(pl.Int32).alias("part"))
                    groups = batch.partition_by("part", as_dict=True)
                else:
                    groups = {(0,): batch}
                for (part,), df in groups.items():
                    table = df.select("gid", "band", "key").to_arrow()
                    if part not in writers:
                        writers[part] = pq.ParquetWriter(str(tmp / f"part-{part:04d}.parquet"), table.schema)
                    writers[part].write_table(table)
        for w in writers.values():
            w.close()
        parts = [bucket_edges(pl.read_parquet(tmp / f"part-{part:04d}.parquet"), all_pairs) for part in sorted(writers)]
        pairs = pl.concat(parts).unique().sort(["s", "d"]) if parts else _NO_EDGES
        return pairs["s"].to_numpy(), pairs["d"].to_numpy()

    def _verify(self, fingerprints: pl.LazyFrame, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        col = "sig" if p.verify == "signature" else "shingles"
        need = pl.DataFrame({"gid": np.unique(np.concatenate([src, dst]))})
        data = fingerprints.select(_GID, col).join(need.lazy(), on="gid", how="semi").collect(engine="streaming")
        idx = self._index_file("sigs.parquet")
        if idx is not None and col == "sig":
            data = pl.concat([data, pl.read_parquet(idx).join(need, on="gid", how="semi")])
        data = data.sort("gid")
        gids = data["gid"].to_numpy()
        si, di = np.searchsorted(gids, src), np.searchsorted(gids, dst)
        si_ok = (si < len(gids)) & (gids[np.minimum(si, len(gids) - 1)] == src)
        di_ok = (di < len(gids)) & (gids[np.minimum(di, len(gids) - 1)] == dst)
        known = si_ok & di_ok  # an indexed row saved without what verification needs: trust the bands
        keep = ~known
        sel = np.flatnonzero(known)
        for lo in range(0, len(sel), 200_000):  # bounded memory: a chunk of edges at a time
            part = sel[lo:lo + 200_000]
            keep[part] = pair_similarity(col, data[col].gather(si[part]), data[col].gather(di[part])) >= p.threshold
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
    """Candidate edges (s, d) among rows (gid, band, key) that share a band key. One sort of the
    rows by (band, key, gid) finds the buckets (runs of equal keys): a hash group-by with a list
    per bucket held ~4x the partition in memory (the driver's peak in a MinHash resolve)."""
    if df.height == 0:
        return _NO_EDGES
    gid, band, key = (df[c].to_numpy() for c in ("gid", "band", "key"))
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
def _payload(col: str, df: pl.DataFrame) -> pl.DataFrame:
    return df.select("gid", pl.col(col).arr.to_list() if col == "sig" else pl.col(col))


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

