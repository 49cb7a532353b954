"""Semantic deduplication, SemDeDup (Abbas et al. 2023, "SemDeDup: Data-efficient learning at
web-scale through semantic deduplication", arXiv 2303.09540).

fingerprint: each row's unit embedding (the ``embedding_column`` an ``embed`` op wrote, float32 or
int8; or computed here with the same model settings when the column is missing), and the keep
policy's value.
resolve: k-means (seeded spherical mini-batch k-means, ``operators.common.kmeans``) on a seeded
sample of the embeddings whose membership hangs on each row's id alone; every row is assigned to
its nearest centroid; within each cluster, cosine similarities of all pairs (in blocks, so memory
is bounded by block x cluster); rows are ranked by the keep policy, and a row whose similarity to
a row kept before it reaches ``threshold`` (the paper's 1 - epsilon) is a duplicate. Unlike the
paper's "max similarity to any earlier row", only *kept* rows remove others, so a chain a~b~c with
a !~ c keeps a and c. Clusters are independent: on Ray they are resolved in hash partitions of the
cluster id, in parallel; locally, spilled to Parquet by cluster and resolved a partition at a time.
Both run the same functions on the same clusters in the same row order: the same output for any
executor and worker count.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from thresher.operators.common.embedding import column_matrix, vectors_column
from thresher.operators.common.kmeans import minibatch_kmeans, nearest, sampled
from thresher.operators.dedup.exact import keep_value
from thresher.operators.semantic.embed import EmbedParams, embed_column, load_embedder
from thresher.pipeline.columns import ROW, SHARD, drop_decisions, no_decisions, set_column, state_rows
from thresher.pipeline.ops import GlobalOp, Resources
from thresher.pipeline.registry import register

ROWS_PER_PARTITION = 200_000  # rows per spilled cluster partition in local resolve (~300 MB of 384-d vectors)
BLOCK = 2048  # rows of a cluster compared with the whole cluster at once
_GID = ((pl.col(SHARD).cast(pl.Int64) * (1 << 32)) + pl.col(ROW)).alias("gid")  # input order
RESULT = {"gid": pl.Int64, "cluster": pl.Int32, "duplicate": pl.Boolean, "keeper": pl.Int64, "similarity": pl.Float32}


@register
class SemanticDedup(GlobalOp):
    """Remove (or mark) semantic near-duplicates, SemDeDup (Abbas et al. 2023): seeded mini-batch
    k-means over sentence embeddings, pairwise cosine similarity within each cluster, and a keep policy."""

    name = "semantic_dedup"
    resources = Resources(cpus=1.0, memory_mb=2048, needs_model=True)
    metrics = {"kmeans_clusters": "k-means clusters the rows were split into",
               "duplicate_groups": "kept rows that had semantic duplicates"}

    class Params(EmbedParams):
        threshold: float = Field(0.9, gt=0, le=1, description="cosine similarity that makes a duplicate (1 - the paper's epsilon)")
        embedding_column: str = Field("embedding", description="column of vectors from `embed` (computed here when missing)")
        field: str | None = Field(None, description="text to embed when the column is missing (default: the recipe's text column)")
        clusters: int | None = Field(None, ge=1, description="k-means clusters (default: rows / cluster_size)")
        cluster_size: int = Field(1000, ge=2, description="average cluster size when clusters is not given")
        kmeans_sample: int = Field(100_000, ge=100, description="rows (a seeded sample) k-means is fitted on")
        kmeans_iterations: int = Field(100, ge=1, description="mini-batches of 1024 rows")
        keep: Literal["first", "longest", "column", "closest", "farthest"] = Field(
            "first", description="which row of a duplicate group stays: first in input order, longest text, highest "
            "keep_column, closest to its cluster's centroid, or farthest from it (the paper's choice)")
        keep_column: str | None = Field(None, description="with keep: column, the row with the highest value stays")
        drop_embedding: bool = Field(
            False, description="remove embedding_column from the rows it keeps (an `embed` step's vectors that served "
            "only the classifier and this dedup: 384 numbers a row the output need not carry)")
        mode: Literal["remove", "mark"] = Field(
            "remove", description="remove duplicates, or keep all and add semantic_cluster / is_semantic_duplicate / "
            "semantic_similarity")

        @model_validator(mode="after")
        def _check(self):
            if self.keep == "column" and not self.keep_column:
                raise ValueError("keep: column needs keep_column")
            return self

    example = {"threshold": 0.9, "keep": "first"}

    def setup(self) -> None:
        """Nothing: the model loads only if a batch lacks the embedding column."""

    # ---------------------------------------------------------------------------- fingerprint
    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        if p.embedding_column in batch.column_names:
            # float32 vectors as the embed step stored them (resolve normalises each row once, as it does
            # vectors computed here: the same decisions, bit for bit); others (int8, lists) converted
            vectors = column_matrix(batch[p.embedding_column], renormalise=False)
        else:
            embedder = load_embedder(p)
            vectors = embed_column(embedder, batch[p.field or self.text_key], p.batch_size)
        cols = {"emb": vectors_column(vectors)}
        value = keep_value(batch, p, p.field or self.text_key) if p.keep in ("longest", "column") else None
        if value is not None:
            cols["value"] = value
        return pa.table(cols)

    # ---------------------------------------------------------------------------- resolve
    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        shards = fingerprints.select(pl.col(SHARD).unique().sort()).collect()[SHARD].to_list()

        def each_shard():
            for s in shards:
                yield _prepared(fingerprints.filter(pl.col(SHARD) == s).collect().sort(ROW))

        n = fingerprints.select(pl.len()).collect().item()
        if n == 0:
            return no_decisions()
        centroids = self._fit(n, pl.concat([self._sample(n, df) for df in each_shard()]))
        assign = functools.partial(_assign, centroids)
        parts = max(1, math.ceil(n / ROWS_PER_PARTITION))
        with tempfile.TemporaryDirectory(prefix="thresher-semdedup-") as tmp:
            writers: dict[int, pq.ParquetWriter] = {}
            for df in each_shard():
                df = assign(df).with_columns((pl.col("cluster") % parts).alias("part"))
                for (part,), group in df.partition_by("part", as_dict=True, include_key=False).items():
                    table = group.to_arrow()
                    if part not in writers:
                        writers[part] = pq.ParquetWriter(str(Path(tmp) / f"part-{part:04d}.parquet"), table.schema)
                    writers[part].write_table(table)
            for w in writers.values():
                w.close()
            found = [self._dedup(pl.read_parquet(Path(tmp) / f"part-{part:04d}.parquet")) for part in sorted(writers)]
        return self._decide(pl.concat(found) if found else pl.DataFrame(schema=RESULT))

    def resolve_distributed(self, fingerprints, shuffle):
        """The same steps as Ray Data work: the sample to the driver for k-means, then the assignment
        as a map and the clusters as a hash-partitioned group; only duplicates reach the driver
        (every row in mark mode)."""
        fp = shuffle.map(fingerprints, _prepared).materialize()
        n = shuffle.count(fp)
        if n == 0:
            return no_decisions()
        schema = {"gid": pl.Int64, "emb": pl.List(pl.Float32)}
        if self.params.keep in ("longest", "column"):
            schema["value"] = pl.Float64
        sample = shuffle.collect(shuffle.map(fp, functools.partial(self._sample, n)), schema)
        centroids = self._fit(n, sample)
        assigned = shuffle.map(fp, functools.partial(_assign, centroids))
        return self._decide(shuffle.collect(shuffle.group(assigned, "cluster", self._dedup), RESULT))

    def _k(self, n: int) -> int:
        return min(n, self.params.clusters or max(1, round(n / self.params.cluster_size)))

    def _sample(self, n: int, df: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``df`` in the seeded k-means sample (``kmeans_sample`` of ``n`` rows, by id)."""
        return df.filter(pl.Series(sampled(df["gid"].to_numpy(), self.params.kmeans_sample / n, self.ctx.seed)))

    def _fit(self, n: int, sample: pl.DataFrame) -> np.ndarray:
        sample = sample.sort("gid")
        centroids = minibatch_kmeans(column_matrix(sample["emb"]), self._k(n), self.ctx.seed,
                                     iterations=self.params.kmeans_iterations)
        self.record("kmeans_clusters", len(centroids))
        return centroids

    def _dedup(self, df: pl.DataFrame) -> pl.DataFrame:
        p = self.params
        return dedup_clusters(df, p.threshold, p.keep, every_row=p.mode == "mark")

    def _decide(self, found: pl.DataFrame) -> pl.DataFrame:
        dups = found.filter(pl.col("duplicate"))
        groups = dups.group_by("keeper").len()
        self.record("duplicate_groups", groups.height)
        if groups.height:
            sizes = (groups["len"] + 1).value_counts()
            self.record_distribution("cluster_size", dict(zip(sizes[sizes.columns[0]].to_list(), sizes["count"].to_list(),
                                                              strict=True)))
        rows = found.with_columns((pl.col("gid") // (1 << 32)).cast(pl.Int32).alias(SHARD),
                                  (pl.col("gid") % (1 << 32)).alias(ROW))
        if self.params.mode == "mark":
            self.state = rows.select(SHARD, ROW, "cluster", "duplicate", "similarity").sort([SHARD, ROW])
            return no_decisions()
        return drop_decisions(rows.filter(pl.col("duplicate")), "semantic_duplicate")

    # ---------------------------------------------------------------------------- apply (mark)
    def apply(self, batch: pa.Table, shard: int, rows: np.ndarray):
        if self.params.drop_embedding and self.params.embedding_column in batch.column_names:
            batch = batch.drop_columns([self.params.embedding_column])
        if self.params.mode != "mark":
            return batch
        st, pos = state_rows(self.state, shard, rows)
        cluster = np.full(batch.num_rows, -1, dtype=np.int32)
        dup = np.zeros(batch.num_rows, dtype=bool)
        sim = np.full(batch.num_rows, np.nan, dtype=np.float32)
        if st is not None and st.height:
            cluster[pos] = st["cluster"].to_numpy()
            dup[pos] = st["duplicate"].to_numpy()
            sim[pos] = st["similarity"].fill_null(np.nan).to_numpy()
        out = set_column(batch, "semantic_cluster", pa.array(cluster, mask=cluster < 0))
        out = set_column(out, "is_semantic_duplicate", pa.array(dup))
        return set_column(out, "semantic_similarity", pa.array(sim, mask=np.isnan(sim)))


def _prepared(df: pl.DataFrame) -> pl.DataFrame:
    """Fingerprint rows as (gid, emb as a list, value?): variable-size lists shuffle safely on Ray."""
    cols = [_GID, pl.col("emb").arr.to_list() if isinstance(df.schema["emb"], pl.Array) else pl.col("emb")]
    return df.select(cols + (["value"] if "value" in df.columns else []))


def _assign(centroids: np.ndarray, df: pl.DataFrame) -> pl.DataFrame:
    """Each row's nearest centroid (``cluster``) and its cosine to it (``centrality``)."""
    if df.height == 0:
        return df.with_columns(pl.lit(None, pl.Int32).alias("cluster"), pl.lit(None, pl.Float64).alias("centrality"))
    cluster, sim = nearest(column_matrix(df["emb"]), centroids)
    return df.with_columns(pl.Series("cluster", cluster), pl.Series("centrality", sim))


_ORDER = {  # keep policy -> (sort columns, descending): the row ranked first in its group stays
    "first": (["gid"], [False]),
    "longest": (["value", "gid"], [True, False]),
    "column": (["value", "gid"], [True, False]),
    "closest": (["centrality", "gid"], [True, False]),
    "farthest": (["centrality", "gid"], [False, False]),
}


def dedup_clusters(df: pl.DataFrame, threshold: float, keep: str, every_row: bool = False) -> pl.DataFrame:
    """SemDeDup within each cluster of ``df`` (gid, emb, cluster, centrality[, value]): rows ranked
    by the keep policy; a row whose cosine to an earlier *kept* row reaches ``threshold`` is a
    duplicate of the first such row. Returns ``RESULT`` rows: the duplicates, or every row."""
    out = []
    if df.height:
        cols, desc = _ORDER[keep]
        df = df.with_columns(pl.col("value").fill_null(float("-inf"))) if "value" in df.columns else df
        for (cluster,), group in df.sort(["cluster", *cols], descending=[False, *desc]).partition_by(
                "cluster", as_dict=True, maintain_order=True).items():
            keeper, sim = greedy_duplicates(column_matrix(group["emb"]), threshold)
            gids = group["gid"].to_numpy()
            dup = keeper >= 0
            sel = np.ones(len(gids), dtype=bool) if every_row else dup
            out.append(pl.DataFrame({
                "gid": gids[sel], "cluster": np.full(int(sel.sum()), cluster, dtype=np.int32), "duplicate": dup[sel],
                "keeper": np.where(dup, gids[np.maximum(keeper, 0)], gids)[sel],
                "similarity": np.where(dup, sim, np.nan).astype(np.float32)[sel]}, schema=RESULT))
    found = pl.concat(out) if out else pl.DataFrame(schema=RESULT)
    return found.with_columns(pl.col("similarity").fill_nan(None))


def greedy_duplicates(emb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For unit rows in keep order: ``(keeper, similarity)`` per row — the index of the first kept
    row before it with cosine >= ``threshold`` and that cosine, or -1 for a kept row. Pairs are
    found a block of rows at a time, so memory is bounded by ``BLOCK`` x rows plus the pairs found."""
    n = len(emb)
    emb = np.asarray(emb, dtype=np.float64)  # float64: BLAS's blocking and threads cannot move a float32 result
    src, dst, val = [], [], []
    for lo in range(0, n, BLOCK):
        sims = emb[lo:lo + BLOCK] @ emb.T
        i, j = np.nonzero(sims >= threshold)
        later = j > i + lo
        src.append(i[later] + lo)
        dst.append(j[later])
        val.append(sims[i[later], j[later]])
    keeper = np.full(n, -1, dtype=np.int64)
    similarity = np.zeros(n, dtype=np.float32)
    src, dst, val = np.concatenate(src), np.concatenate(dst), np.concatenate(val)
    if len(src) == 0:
        return keeper, similarity
    starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])  # edges come sorted by src, then dst
    ends = np.r_[starts[1:], len(src)]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):  # rows with later near-duplicates only
        if keeper[src[a]] >= 0:
            continue  # itself a duplicate: it removes nothing
        targets = dst[a:b]
        fresh = keeper[targets] < 0
        keeper[targets[fresh]] = src[a]
        similarity[targets[fresh]] = val[a:b][fresh]
    return keeper, similarity
