"""One schema for every Parquet part of an output.

Each part is written with the schema of the rows that reached it, so parts from differing inputs
(a field one file has and another lacks, an all-null column, int in one file and float in the
next) get different schemas, and readers of the whole directory — ``polars.read_parquet(dir)``,
``pyarrow.dataset``, ``datasets.load_dataset("parquet", data_files=...)`` — refuse them. At commit
the parts' schemas are unified (``pyarrow.unify_schemas``, permissive: null -> any type, int ->
float, string -> large_string) and the parts that differ are rewritten with the union — missing
columns as nulls, in the union's column order — batch by batch and atomically (temp file, rename),
so a crash in the middle leaves whole parts that the ``--resume``'d commit unifies again. Parts whose
types cannot be reconciled (a column that is a string in one file and a list in another) are left
as they are, with a warning naming the column.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from thresher.pipeline.io.writers import TMP_SUFFIX


def target_schema(schemas: list[pa.Schema]) -> pa.Schema | None:
    """The union of ``schemas`` (None when two types of one column cannot be reconciled)."""
    try:
        return pa.unify_schemas([s.remove_metadata() for s in schemas], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        warnings.warn(f"the output's Parquet parts keep differing schemas: {e}", RuntimeWarning, stacklevel=2)
        return None


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``: its columns cast, the ones it lacks as nulls."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def unify_parquet_parts(out: str | os.PathLike, files: list[str]) -> int:
    """Rewrite the parts among ``files`` (names relative to ``out``) whose schema is not the union
    of all; returns how many were rewritten."""
    paths = [Path(out) / f for f in files if f.endswith(".parquet")]
    if len(paths) < 2:
        return 0
    schemas = [pq.read_schema(p) for p in paths]
    if all(s.equals(schemas[0], check_metadata=False) for s in schemas[1:]):
        return 0
    target = target_schema(schemas)
    if target is None:
        return 0
    rewritten = 0
    for path, schema in zip(paths, schemas, strict=True):
        if schema.equals(target, check_metadata=False):
            continue
        tmp = path.with_name(path.name + TMP_SUFFIX)
        pf = pq.ParquetFile(path)
        with pq.ParquetWriter(str(tmp), target, compression="zstd") as w:
            for i in range(pf.num_row_groups):  # one row group at a time: the memory of one, the groups kept
                group = pf.read_row_group(i)
                w.write_table(conform(group, target), row_group_size=max(1, group.num_rows))
        os.replace(tmp, path)
        rewritten += 1
    return rewritten
