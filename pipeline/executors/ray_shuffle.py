"""Ray Data shuffles for global ops: hash-partitioned groups, co-groups (a partitioned join) and
distributed connected components.

A global op's resolve step is written against these primitives (see
``GlobalOp.resolve_distributed``), so the same algorithm runs on one machine or a cluster without
gathering every fingerprint or edge in the driver. Functions passed in run in Ray workers on
polars DataFrames: one call sees every row whose key hashes to its partition.

Shuffles use Ray Data's pull-based sort shuffle: on small and medium data it costs ~0.1 s per
shuffle, where the hash-shuffle aggregators take ~6 s to start (measured on 2 cores, Ray 2.60).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from thresher.pipeline.columns import set_column

PART = "__part"
SIDE = "__side"
MAX_ROUNDS = 100  # large-star/small-star needs O(log^2 n) rounds; this is a guard, never reached
LOCAL_EDGES = 2_000_000  # a graph with at most this many edges left (32 MB of pairs) is finished in one task


def configure_data_context() -> None:
    """Settings thresher's Ray Data pipelines rely on (set in the driver; Ray ships them to tasks)."""
    import logging
    import warnings

    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    ctx.enable_progress_bars = False  # thresher draws its own
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # failures reach the user as exceptions (see ray.py)
    # planning hints ("only received 1 input") about small inputs are not the user's concern
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\..*")


def _arrow(df: pl.DataFrame) -> pa.Table:
    return df.to_arrow(compat_level=pl.CompatLevel.oldest())


def _map_block(table: pa.Table, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> pa.Table:
    return _arrow(fn(pl.from_arrow(table)))


def _add_part(table: pa.Table, key: str, partitions: int, side: int | None = None, schema: dict | None = None) -> pa.Table:
    df = pl.from_arrow(table)
    df = df.with_columns((pl.col(key).hash(seed=17) % partitions).cast(pl.Int32).alias(PART))
    if side is not None:  # a co-group: both sides get every column of both (typed nulls), so Ray never has to
        # unify schemas when it concatenates them (its null-filled fixed-size lists are not valid Arrow for polars)
        df = df.with_columns(pl.lit(side, dtype=pl.Int8).alias(SIDE),
                             *[pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in df.columns])
        df = df.select([*schema, PART, SIDE]).cast(schema)
    return _arrow(df)


def _group_call(table: pa.Table, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> pa.Table:
    return _arrow(fn(pl.from_arrow(table).drop(PART)))


def _co_group_call(table: pa.Table, fn, left_schema: dict, right_schema: dict) -> pa.Table:
    df = pl.from_arrow(table)
    return _arrow(fn(_side(df, 0, left_schema), _side(df, 1, right_schema)))


def _side(df: pl.DataFrame, side: int, schema: dict) -> pl.DataFrame:
    """One side's rows of a co-group partition, typed as declared (a partition may hold none)."""
    if not all(c in df.columns for c in schema):
        return pl.DataFrame(schema=schema)
    return df.filter(pl.col(SIDE) == side).select(list(schema)).cast(schema)


class RayShuffle:
    """The shuffle primitives on Ray Data; ``partitions`` is how many groups each shuffle makes."""

    def __init__(self, partitions: int, local_edges: int = LOCAL_EDGES):
        self.partitions = max(1, partitions)
        self.local_edges = local_edges

    # ------------------------------------------------------------------ datasets
    def read_parquet(self, paths: list[str], offsets: list[int], row: str):
        """Fingerprint files as one dataset; ``offsets[i]`` is added to column ``row`` of file i
        (pieces of a shard are numbered after the pieces before them)."""
        import ray

        ds = ray.data.from_items([{"path": p, "offset": o} for p, o in zip(paths, offsets, strict=True)],
                                 override_num_blocks=max(1, min(len(paths), 4 * self.partitions)))
        return ds.map_batches(_read_files, fn_args=(row,), batch_size=None, batch_format="pyarrow")

    def map(self, ds, fn: Callable[[pl.DataFrame], pl.DataFrame]):
        """``fn`` on every block (row-local work: no shuffle)."""
        return ds.map_batches(_map_block, fn_args=(fn,), batch_size=None, batch_format="pyarrow")

    def group(self, ds, key: str, fn: Callable[[pl.DataFrame], pl.DataFrame]):
        """Hash-partition rows by ``key``; ``fn`` sees every row of one partition at once."""
        parted = ds.map_batches(_add_part, fn_args=(key, self.partitions), batch_size=None, batch_format="pyarrow")
        return parted.groupby(PART).map_groups(_group_call, fn_args=(fn,), batch_format="pyarrow")

    def co_group(self, left, right, left_key: str, right_key: str, left_schema: dict, right_schema: dict,
                 fn: Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame]):
        """A partitioned join: rows of both datasets whose keys hash alike meet in one
        ``fn(left, right)``, each side as a DataFrame with the declared schema (possibly empty)."""
        both = {**left_schema, **right_schema}
        if any(left_schema[c] != right_schema[c] for c in left_schema.keys() & right_schema.keys()):
            raise ValueError("co_group: a column both sides have must have one type")
        lp = left.map_batches(_add_part, fn_args=(left_key, self.partitions, 0, both), batch_size=None, batch_format="pyarrow")
        rp = right.map_batches(_add_part, fn_args=(right_key, self.partitions, 1, both), batch_size=None, batch_format="pyarrow")
        return lp.union(rp).groupby(PART).map_groups(_co_group_call, fn_args=(fn, left_schema, right_schema),
                                                     batch_format="pyarrow")

    def collect(self, ds, schema: dict) -> pl.DataFrame:
        """Bring a (small) dataset to the driver."""
        tables = [t for t in ds.iter_batches(batch_size=None, batch_format="pyarrow") if t.num_rows]
        if not tables:
            return pl.DataFrame(schema=schema)
        return pl.from_arrow(pa.concat_tables(tables, promote_options="permissive")).select(list(schema)).cast(schema)

    def count(self, ds) -> int:
        return ds.count()

    # ------------------------------------------------------------------ connected components
    def components(self, edges, local: Callable[[np.ndarray, np.ndarray], pl.DataFrame] | None = None):
        """(s, d) edges -> (gid, root) for every node on an edge, root = the smallest node of its
        component. Alternating large-star and small-star steps (Kiveris, Lattanzi, Mirrokni, Rastogi
        & Vassilvitskii, "Connected Components in MapReduce and Beyond", SoCC 2014): each step is one
        shuffle of the edge list, O(log^2 n) rounds, no node's whole component is ever in one place
        until the graph is a forest of stars centred on each component's minimum.

        ``local(src, dst)`` (a union-find giving the same (gid, root) frame) first contracts every
        block of edges on its own, in parallel: a block's edges become the stars (its components'
        minimum, member) of its own components — any split of the edges into parts, each replaced by
        a spanning forest on the same nodes, keeps every component and its minimum, and a cluster of
        c rows found in one bucket shrinks from up to c(c-1)/2 pairs to c-1. Then ``local`` finishes
        the graph in one task once at most ``local_edges`` edges are left: the star steps preserve
        components too, and a few megabytes of pairs cost one task instead of two shuffles per round
        (so the one serial step is bounded by ``local_edges``, never by the corpus)."""
        e = self.map(edges, _normalise if local is None else functools.partial(_contract, local)).materialize()
        for _ in range(MAX_ROUNDS):
            if local is not None and e.count() <= self.local_edges:  # materialized: counted from metadata
                return e.repartition(1).map_batches(_components_in_one_task, fn_args=(local,), batch_size=None,
                                                    batch_format="pyarrow")
            ls = self.group(self.map(e, _both_directions), "u", _large_star).materialize()
            unfinished = self.collect(self.map(ls, _stats_rows), {"b": pl.Int64})["b"].sum()
            e = self.map(ls, _edge_rows).materialize()
            if not unfinished:  # a forest of stars around each component's minimum: done
                return self.group(self.map(e, _star_members), "gid", _unique)
            e = self.group(self.map(e, _both_directions), "u", _small_star).materialize()
        raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def _components_in_one_task(table: pa.Table, local) -> pa.Table:
    df = pl.from_arrow(table) if table.num_rows else pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64})
    return _arrow(local(df["a"].to_numpy(), df["b"].to_numpy()).select(pl.col("gid").cast(pl.Int64),
                                                                        pl.col("root").cast(pl.Int64)))


def _contract(local, df: pl.DataFrame) -> pl.DataFrame:
    """A block's edges -> its components as stars around their minimum (``local``: a union-find)."""
    e = _normalise(df)
    comp = local(e["a"].to_numpy(), e["b"].to_numpy())
    return comp.filter(pl.col("gid") != pl.col("root")).select(pl.col("root").cast(pl.Int64).alias("a"),
                                                              pl.col("gid").cast(pl.Int64).alias("b"))


def _read_files(batch: pa.Table, row: str) -> pa.Table:
    import pyarrow.parquet as pq

    tables = []
    for path, offset in zip(batch["path"].to_pylist(), batch["offset"].to_pylist(), strict=True):
        t = pq.read_table(path)
        if offset and t.num_rows:
            t = set_column(t, row, pa.array(t[row].to_numpy() + np.int64(offset)))
        tables.append(t)
    return pa.concat_tables(tables, promote_options="permissive")


def _normalise(df: pl.DataFrame) -> pl.DataFrame:
    return (df.select(pl.min_horizontal("s", "d").cast(pl.Int64).alias("a"), pl.max_horizontal("s", "d").cast(pl.Int64).alias("b"))
            .filter(pl.col("a") != pl.col("b")).unique())


def _both_directions(df: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([df.select(pl.col("a").alias("u"), pl.col("b").alias("v")),
                      df.select(pl.col("b").alias("u"), pl.col("a").alias("v"))])


def _large_star(df: pl.DataFrame) -> pl.DataFrame:
    """Every node links its larger neighbours to the smallest node of its neighbourhood. Also counts
    nodes that are not yet a star centre (only larger neighbours) or leaf (one smaller neighbour)."""
    g = (df.unique().group_by("u")
         .agg(pl.col("v").min().alias("m"), (pl.col("v") < pl.col("u")).sum().alias("smaller"),
              (pl.col("v") > pl.col("u")).sum().alias("larger"), pl.col("v").alias("vs"))
         .with_columns(pl.min_horizontal("m", "u").alias("m")))
    unfinished = g.filter((pl.col("smaller") > 1) | ((pl.col("smaller") >= 1) & (pl.col("larger") >= 1))).height
    out = g.explode("vs").filter(pl.col("vs") > pl.col("u")).select(pl.col("m").alias("a"), pl.col("vs").alias("b"))
    stats = pl.DataFrame({"a": [-1], "b": [unfinished]}, schema={"a": pl.Int64, "b": pl.Int64})
    return pl.concat([out.unique(), stats])


def _small_star(df: pl.DataFrame) -> pl.DataFrame:
    """Every node and its smaller neighbours link to the smallest of them."""
    g = (df.unique().filter(pl.col("v") < pl.col("u")).group_by("u")
         .agg(pl.col("v").min().alias("m"), pl.col("v").alias("vs")))
    out = pl.concat([g.explode("vs").select(pl.col("m").alias("a"), pl.col("vs").alias("b")),
                     g.select(pl.col("m").alias("a"), pl.col("u").alias("b"))])
    return out.filter(pl.col("a") != pl.col("b")).unique()


def _stats_rows(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("a") == -1).select("b")


def _edge_rows(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("a") != -1)


def _star_members(df: pl.DataFrame) -> pl.DataFrame:
    return pl.concat([df.select(pl.col("b").alias("gid"), pl.col("a").alias("root")),
                      df.select(pl.col("a").alias("gid"), pl.col("a").alias("root"))])


def _unique(df: pl.DataFrame) -> pl.DataFrame:
    return df.unique()
