"""Shuffles for global ops on Ray tasks: hash-partitioned groups, co-groups (a partitioned join)
and distributed connected components.

A global op's resolve step is written against these primitives (see
``GlobalOp.resolve_distributed``), so the same algorithm runs on one machine or a cluster without
gathering every fingerprint or edge in the driver. Functions passed in run in Ray workers on
polars DataFrames: one call sees every row whose key hashes to its partition.

A dataset here is a list of Arrow blocks in Ray's object store (``Blocks``) plus the row-local
functions still to apply to them (fused into whichever task reads the blocks next, as Ray Data fuses
its map stages). A shuffle is the textbook two-stage one on Ray core: one task per block splits it
by ``hash(key) % partitions`` into ``partitions`` objects (``num_returns``), then one task per
partition concatenates its pieces and calls the function (the map and reduce stages of Dean &
Ghemawat, "MapReduce", OSDI 2004, on Ray's multiple-return tasks: docs.ray.io, Ray Core, Tasks,
"Multiple returns"). It replaced Ray Data's sort shuffle: on 2 cores that pipeline cost ~0.2-1.4 s
per shuffle in planning and operator start-up, and Ray Data's own actors (stats, autoscaling
coordinator, actor-location tracker: ~300 MB PSS together) stayed up for the whole run
(docs/benchmarks.md, "Ray overhead and scaling model"). Ray Data datasets are still accepted as
inputs (their blocks are taken as they are).

The working set is bounded by the object store (docs/benchmarks.md, "Ray overhead and scaling
model", rounds three and four: at 1 GB the MinHash resolve's objects overflowed a local Ray's
512 MB store, and Ray started spill and restore workers):

- fingerprint files are not read into the store: a block of them is a small table of paths, read
  (only the columns asked for, ``RayShuffle.select``) inside whichever task consumes it next, so a
  resolve that uses them three times holds none of them between uses;
- a shuffle whose input is larger than ``round_bytes`` runs in rounds: ``partitions * rounds``
  hash partitions, round ``r``'s map tasks emitting only the pieces of partitions ``[r * P, (r + 1)
  * P)`` and its ``P`` reduce tasks consuming them. Round ``r`` is submitted only once round
  ``r - 2``'s reducers are done, so at most two rounds' pieces are in the store at once (the
  external-memory answer to a shuffle larger than memory: more partitions than fit, processed a
  bounded number at a time — Vitter, "External Memory Algorithms and Data Structures", ACM
  Computing Surveys 33(2), 2001, section 5, distribution sort). Each round re-reads its input
  (files, or blocks already in the store); only a key's partition changes, never which rows meet.
  A round has enough partitions that one reducer's input is about ``PIECE_BYTES``, and fingerprint
  blocks are about that size too, so a task's own working memory is bounded as well.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from thresher.pipeline.columns import set_column

PART = "__part"
MAX_ROUNDS = 100  # large-star/small-star needs O(log^2 n) rounds; this is a guard, never reached
LOCAL_EDGES = 2_000_000  # a graph with at most this many edges left (32 MB of pairs) is finished in one task
ROUND_SHARE = 0.2  # of the object store: one shuffle round's pieces at most (two rounds are alive at once)
ROUND_ENV = "THRESHER_SHUFFLE_ROUND_MB"  # a fixed round size instead (tests, benchmarks)
IN_FLIGHT_ROUNDS = 2  # rounds whose pieces may be in the store at once
PIECE_BYTES = 16 * 1024 * 1024  # about the most one block of fingerprint files, or one reducer's input, holds


def configure_data_context() -> None:
    """Settings for the Ray Data pipelines thresher still builds (object-store fingerprint reads, and
    datasets handed to ``RayShuffle`` by callers): set in the driver, Ray ships them to tasks."""
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


def _frame(table: pa.Table, fns: tuple) -> pa.Table:
    """A block through the pending row-local functions. An empty block passes as it is (a shuffle
    partition that got no rows has no columns; Ray Data never calls a function on such a group).
    A file-backed block (``_Read`` first) is its paths until the read."""
    if fns and isinstance(fns[0], _Read):
        table, fns = fns[0].read(table), fns[1:]
    for fn in fns:
        if not table.num_rows:
            return table
        table = _arrow(fn(pl.from_arrow(table)))
    return table


def _concat(tables) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({})
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")


_REMOTE: dict = {}


def _remote(fn, **options):
    """``fn`` as a Ray remote function (made once per process and options)."""
    import ray

    key = (fn, tuple(sorted(options.items())))
    if key not in _REMOTE:
        _REMOTE[key] = ray.remote(fn).options(**options) if options else ray.remote(fn)
    return _REMOTE[key]


class _Read:
    """The first step of a file-backed block: its table of (path, offset) -> the files' rows (only
    ``columns`` where given), ``offset`` added to column ``row``."""

    def __init__(self, row: str, columns: tuple[str, ...] | None = None):
        self.row, self.columns = row, columns

    def read(self, paths: pa.Table) -> pa.Table:
        return _read_files(paths, self.row, self.columns)


class Blocks:
    """A dataset: Arrow blocks in the object store (``refs``) and the row-local functions still to
    apply to each (``fns``, run in the task that next reads the block). A file-backed dataset's
    ``refs`` are small tables of file paths and its first function a ``_Read``; ``sizes`` are then
    its blocks' bytes by column (the files' uncompressed sizes). ``grow``: the pending functions'
    output over their input, as the callers of ``map`` declare it (sizes the shuffle's rounds)."""

    def __init__(self, refs: list, fns: tuple = (), sizes: list[dict] | None = None, grow: float = 1.0):
        self.refs = list(refs)
        self.fns = tuple(fns)
        self.sizes = sizes
        self.grow = grow

    def then(self, fn, grow: float = 1.0) -> Blocks:
        return Blocks(self.refs, (*self.fns, fn), self.sizes, self.grow * grow)

    @property
    def files(self) -> bool:
        return bool(self.fns) and isinstance(self.fns[0], _Read)

    def nbytes(self) -> int:
        """The estimated bytes of the dataset once its pending functions have run."""
        import ray

        if self.files:
            cols = self.fns[0].columns
            raw = sum(sum(v for c, v in block.items() if cols is None or c in cols) for block in self.sizes or ())
        elif self.refs:
            ray.wait(self.refs, num_returns=len(self.refs), fetch_local=False)
            try:  # the owner's record of each object (docs.ray.io, "ray.experimental.get_object_locations")
                locations = ray.experimental.get_object_locations(self.refs)
            except Exception:  # an experimental API: without it the shuffle runs in one round, as before
                locations = {}
            raw = sum(int((loc or {}).get("object_size") or 0) for loc in locations.values())
        else:
            raw = 0
        return int(raw * self.grow)

    def materialize(self) -> Blocks:
        """Run the pending functions (one task per block) and wait for the blocks."""
        import ray

        if not self.fns:
            if self.refs:
                ray.wait(self.refs, num_returns=len(self.refs), fetch_local=False)
            return self
        fns = ray.put(self.fns)
        refs = [_remote(_map_task).remote(r, fns) for r in self.refs]
        return Blocks(refs).materialize()


def _map_task(table: pa.Table, fns: tuple) -> pa.Table:
    return _frame(table, fns)


def _split_task(table: pa.Table, fns: tuple, key: str, partitions: int, first: int = 0,
                count: int | None = None) -> tuple:
    """One block -> its rows of partitions ``first .. first + count - 1`` (``hash(key) % partitions``,
    the seed fixed; every partition when ``count`` is None)."""
    count = partitions if count is None else count
    table = _frame(table, fns)
    if not table.num_rows:
        return tuple(pa.table({}) for _ in range(count)) if count > 1 else pa.table({})
    df = pl.from_arrow(table)
    part = ((df[key].hash(seed=17) % partitions).cast(pl.Int32) - first).alias(PART)
    df = df.with_columns(part)
    if count < partitions:  # this round's partitions only
        df = df.filter((pl.col(PART) >= 0) & (pl.col(PART) < count))
    pieces = df.partition_by(PART, as_dict=True, include_key=False, maintain_order=True)
    out = tuple(_arrow(pieces[(i,)]) if (i,) in pieces else pa.table({}) for i in range(count))
    return out if count > 1 else out[0]


def _group_task(fn, *pieces: pa.Table) -> pa.Table:
    table = _concat(pieces)
    return _arrow(fn(pl.from_arrow(table))) if table.num_rows else table


def _co_group_task(fn, left_schema: dict, right_schema: dict, n_left: int, *pieces: pa.Table) -> pa.Table:
    left, right = _concat(pieces[:n_left]), _concat(pieces[n_left:])
    if not left.num_rows and not right.num_rows:
        return pa.table({})
    return _arrow(fn(_side(left, left_schema), _side(right, right_schema)))


def _side(table: pa.Table, schema: dict) -> pl.DataFrame:
    """One side's rows of a co-group partition, typed as declared (a partition may hold none)."""
    if not table.num_rows:
        return pl.DataFrame(schema=schema)
    return pl.from_arrow(table).select(list(schema)).cast(schema)


def _one_task(fn, fns: tuple, *blocks: pa.Table) -> pa.Table:
    return fn(_concat([_frame(b, fns) for b in blocks]))


def _num_rows(table: pa.Table, fns: tuple) -> int:
    return _frame(table, fns).num_rows


def _blocks(ds) -> Blocks:
    """A ``Blocks``, or a Ray Data dataset's blocks (as they are)."""
    if isinstance(ds, Blocks):
        return ds
    configure_data_context()
    return Blocks(ds.to_arrow_refs())


class RayShuffle:
    """The shuffle primitives on Ray tasks; ``partitions`` is how many groups each shuffle makes."""

    def __init__(self, partitions: int, local_edges: int = LOCAL_EDGES, round_bytes: int | None = None):
        """``round_bytes``: the most one shuffle round's pieces may hold (``round_budget()``; None: no
        rounds, every shuffle in one)."""
        self.partitions = max(1, partitions)
        self.local_edges = local_edges
        self.round_bytes = round_bytes
        self.rounds: list[int] = []  # each shuffle's rounds, in order
        self.peak_pieces = 0  # the most shuffle pieces submitted and not yet consumed at once

    # ------------------------------------------------------------------ datasets
    def read_parquet(self, paths: list[str], offsets: list[int], row: str) -> Blocks:
        """Fingerprint files as one dataset; ``offsets[i]`` is added to column ``row`` of file i
        (pieces of a shard are numbered after the pieces before them). At most ``4 * partitions``
        blocks, each a group of files read by the task that consumes it (nothing of them is put in
        the object store); their uncompressed sizes by column, from the files' footers, size the
        shuffles."""
        sizes = [_column_bytes(path) for path in paths]
        n = max(1, min(len(paths), max(4 * self.partitions, math.ceil(sum(sum(c.values()) for c in sizes) / PIECE_BYTES))))
        groups = [g for g in np.array_split(np.arange(len(paths)), n) if len(g)]
        return Blocks([pa.table({"path": [paths[i] for i in g], "offset": [offsets[i] for i in g]}) for g in groups],
                      (_Read(row),), [_sum_counts(sizes[i] for i in g) for g in groups])

    def map(self, ds, fn: Callable[[pl.DataFrame], pl.DataFrame], grow: float = 1.0) -> Blocks:
        """``fn`` on every block (row-local work: no shuffle; fused into the next task). ``grow``:
        about how much larger ``fn``'s output is than its input (sizes the shuffles' rounds)."""
        return _blocks(ds).then(fn, grow)

    def select(self, ds, columns: list[str]) -> Blocks:
        """Only ``columns`` of the dataset; a file-backed one reads only those columns."""
        ds = _blocks(ds)
        if ds.files and len(ds.fns) == 1:
            return Blocks(ds.refs, (_Read(ds.fns[0].row, tuple(columns)),), ds.sizes, ds.grow)
        return ds.then(functools.partial(_select, list(columns)))

    def _rounds(self, sides: list[Blocks]) -> tuple[int, int]:
        """(rounds, partitions per round): rounds of at most ``round_bytes``, each with enough
        partitions that a reducer's input is about ``PIECE_BYTES`` at most (at least ``partitions``)."""
        if not self.round_bytes:
            return 1, self.partitions
        est = sum(ds.nbytes() for ds in sides)
        rounds = max(1, math.ceil(est / self.round_bytes))
        return rounds, max(self.partitions, math.ceil(min(est, self.round_bytes) / PIECE_BYTES))

    def _split(self, ds: Blocks, key: str, partitions: int, first: int, count: int) -> list[list]:
        """Every block's pieces of partitions ``first .. first + count - 1`` of ``partitions``, by
        partition: ``[partition][block]``."""
        if not ds.refs:
            return [[] for _ in range(count)]
        fns = ray_put(ds.fns)
        split = _remote(_split_task, num_returns=count)
        refs = [split.remote(r, fns, key, partitions, first, count) for r in ds.refs]
        if count == 1:
            refs = [[r] for r in refs]
        return [[r[i] for r in refs] for i in range(count)]

    def _shuffle(self, sides: list[tuple[Blocks, str]], reduce: Callable[[list[list]], object]) -> Blocks:
        """Hash-partition every side by its key and call ``reduce(pieces)`` (``pieces[side]``: that
        side's pieces of one partition; it submits the reduce task) once per partition, in rounds of
        ``partitions`` (see the module's docstring); the reducers' outputs, in partition order."""
        import ray

        rounds, p = self._rounds([ds for ds, _ in sides])
        self.rounds.append(rounds)
        total = p * rounds
        out, window, alive = [], [], []
        for r in range(rounds):
            if len(window) == IN_FLIGHT_ROUNDS:  # round r - 2's pieces are consumed before round r's are made
                done = window.pop(0)
                ray.wait(done, num_returns=len(done), fetch_local=False)
                alive.pop(0)
            parts = [self._split(ds, key, total, r * p, p) for ds, key in sides]
            refs = [reduce([side[i] for side in parts]) for i in range(p)]
            alive.append(sum(len(ds.refs) for ds, _ in sides) * p)
            self.peak_pieces = max(self.peak_pieces, sum(alive))
            del parts  # the pieces are the reducers' now: freed as each one finishes
            out += refs
            window.append(refs)
        return Blocks(out)

    def group(self, ds, key: str, fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Blocks:
        """Hash-partition rows by ``key``; ``fn`` sees every row of one partition at once."""
        fn_ref, task = ray_put(fn), _remote(_group_task)
        return self._shuffle([(_blocks(ds), key)], lambda pieces: task.remote(fn_ref, *pieces[0]))

    def co_group(self, left, right, left_key: str, right_key: str, left_schema: dict, right_schema: dict,
                 fn: Callable[[pl.DataFrame, pl.DataFrame], pl.DataFrame]) -> Blocks:
        """A partitioned join: rows of both datasets whose keys hash alike meet in one
        ``fn(left, right)``, each side as a DataFrame with the declared schema (possibly empty)."""
        if any(left_schema[c] != right_schema[c] for c in left_schema.keys() & right_schema.keys()):
            raise ValueError("co_group: a column both sides have must have one type")
        fn_ref, task = ray_put(fn), _remote(_co_group_task)
        return self._shuffle([(_blocks(left), left_key), (_blocks(right), right_key)],
                             lambda pieces: task.remote(fn_ref, left_schema, right_schema, len(pieces[0]),
                                                        *pieces[0], *pieces[1]))

    def one_task(self, ds, fn: Callable[[pa.Table], pa.Table]) -> Blocks:
        """``fn`` on all the dataset's rows at once, in one task."""
        ds = _blocks(ds)
        return Blocks([_remote(_one_task).remote(fn, ray_put(ds.fns), *ds.refs)])

    def collect(self, ds, schema: dict) -> pl.DataFrame:
        """Bring a (small) dataset to the driver."""
        import ray

        ds = _blocks(ds).materialize()
        table = _concat(ray.get(ds.refs))
        if not table.num_rows:
            return pl.DataFrame(schema=schema)
        return pl.from_arrow(table).select(list(schema)).cast(schema)

    def count(self, ds) -> int:
        import ray

        ds = _blocks(ds)
        fns, task = ray_put(ds.fns), _remote(_num_rows)
        return int(sum(ray.get([task.remote(r, fns) for r in ds.refs])))

    # ------------------------------------------------------------------ connected components
    def components(self, edges, local: Callable[[np.ndarray, np.ndarray], pl.DataFrame] | None = None) -> Blocks:
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
            if local is not None and self.count(e) <= self.local_edges:
                return self.one_task(e, functools.partial(_components_in_one_task, local=local))
            ls = self.group(self.map(e, _both_directions, grow=2.0), "u", _large_star).materialize()
            unfinished = self.collect(self.map(ls, _stats_rows), {"b": pl.Int64})["b"].sum()
            e = self.map(ls, _edge_rows).materialize()
            if not unfinished:  # a forest of stars around each component's minimum: done
                return self.group(self.map(e, _star_members), "gid", _unique)
            e = self.group(self.map(e, _both_directions, grow=2.0), "u", _small_star).materialize()
        raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def ray_put(value):
    """``value`` in the object store once, for many tasks' arguments (a tuple of no functions as it is)."""
    import ray

    return value if value == () else ray.put(value)


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


def _read_files(batch: pa.Table, row: str, columns: tuple[str, ...] | None = None) -> pa.Table:
    import pyarrow.parquet as pq

    tables = []
    for path, offset in zip(batch["path"].to_pylist(), batch["offset"].to_pylist(), strict=True):
        t = pq.read_table(path, columns=list(columns) if columns is not None else None)
        if offset and t.num_rows and row in t.column_names:
            t = set_column(t, row, pa.array(t[row].to_numpy() + np.int64(offset)))
        tables.append(t)
    return pa.concat_tables(tables, promote_options="permissive")


def _column_bytes(path: str) -> dict[str, int]:
    """A parquet file's uncompressed bytes by top-level column (its footer; {} where unreadable)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException):  # a file the driver cannot see: the shuffle runs in one round
        return {}
    out: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            name = col.path_in_schema.split(".", 1)[0]
            out[name] = out.get(name, 0) + col.total_uncompressed_size
    return out


def _sum_counts(counts) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _select(columns: list[str], df: pl.DataFrame) -> pl.DataFrame:
    return df.select(columns)


def round_budget() -> int | None:
    """The bytes one shuffle round may hold: ``THRESHER_SHUFFLE_ROUND_MB`` where set (0: no rounds),
    else ``ROUND_SHARE`` of the Ray cluster's object store (None where Ray does not say)."""
    import ray

    if os.environ.get(ROUND_ENV):
        return int(float(os.environ[ROUND_ENV]) * 1024 * 1024) or None
    store = ray.cluster_resources().get("object_store_memory")
    return int(store * ROUND_SHARE) if store else None


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
