"""Connected components of candidate-duplicate edges, and the keep policy inside each component.

Rows are identified by a global order key ``gid = shard << 32 | row`` (input order); index rows
from an earlier corpus get negative gids, so they come first and are always kept.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
from numba import njit

from thresher.pipeline.columns import set_column, state_rows


def gid(shard, row):
    return (np.asarray(shard, dtype=np.int64) << 32) | np.asarray(row, dtype=np.int64)


@njit(cache=True)
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit(cache=True)
def _union_all(n, src, dst):
    parent = np.arange(n)
    for i in range(len(src)):
        a = _find(parent, src[i])
        b = _find(parent, dst[i])
        if a != b:
            if a < b:  # the smaller index (earlier gid) becomes the root: deterministic
                parent[b] = a
            else:
                parent[a] = b
    for i in range(n):
        parent[i] = _find(parent, i)
    return parent


def components(src_gid: np.ndarray, dst_gid: np.ndarray) -> pl.DataFrame:
    """(gid, root) for every row on an edge; root = the smallest gid of its component."""
    if len(src_gid) == 0:
        return pl.DataFrame({"gid": [], "root": []}, schema={"gid": pl.Int64, "root": pl.Int64})
    nodes, inv = np.unique(np.concatenate([src_gid, dst_gid]), return_inverse=True)
    n = len(src_gid)
    parent = _union_all(len(nodes), inv[:n].astype(np.int64), inv[n:].astype(np.int64))
    return pl.DataFrame({"gid": nodes, "root": nodes[parent]})


def choose_keepers(comp: pl.DataFrame, keep: str, score: pl.DataFrame | None = None) -> pl.DataFrame:
    """Add ``keeper`` (the gid kept in each component) and ``size``. keep: first | longest | column
    (``score`` has gid, value). Index rows (negative gid) always win; ties go to input order."""
    df = comp
    if keep != "first" and score is not None:
        df = df.join(score, on="gid", how="left").with_columns(pl.col("value").fill_null(float("-inf")))
        df = df.with_columns((pl.col("gid") < 0).alias("indexed"))
        best = (df.sort(["root", "indexed", "value", "gid"], descending=[False, True, True, False])
                  .group_by("root", maintain_order=True).agg(pl.first("gid").alias("keeper")))
        df = comp.join(best, on="root")
    else:
        df = comp.with_columns(pl.col("root").alias("keeper"))
    return df.with_columns(pl.len().over("root").alias("size"))


def size_histogram(comp: pl.DataFrame) -> dict[str, int]:
    """Clusters by size bucket, for the ledger."""
    sizes = comp.group_by("root").agg(pl.len().alias("n"))["n"].to_numpy()
    out = {}
    for lo, hi in ((2, 2), (3, 5), (6, 10), (11, 100), (101, None)):
        sel = (sizes >= lo) & (sizes <= hi) if hi else sizes >= lo
        if sel.any():
            out[f"clusters_size_{lo}" + (f"-{hi}" if hi and hi != lo else ("+" if not hi else ""))] = int(sel.sum())
    return out


def mark_clusters(batch: pa.Table, state: pl.DataFrame | None, shard: int, rows: np.ndarray) -> pa.Table:
    """Mark mode's apply: each row's ``dup_cluster`` (its cluster's keeper, null outside any
    cluster) and ``is_duplicate``, from the state resolve left (``SHARD``, ``ROW``,
    ``dup_cluster``, ``is_duplicate``)."""
    st, pos = state_rows(state, shard, rows)
    cluster = np.full(batch.num_rows, -1, dtype=np.int64)
    dup = np.zeros(batch.num_rows, dtype=bool)
    if st is not None and st.height:
        cluster[pos] = st["dup_cluster"].to_numpy()
        dup[pos] = st["is_duplicate"].to_numpy()
    out = set_column(batch, "dup_cluster", pa.array(cluster, mask=cluster < 0))
    return set_column(out, "is_duplicate", pa.array(dup))
