"""The rows a pass keeps for the next one: Arrow IPC stream files under ``_work/`` (one or more
segments per shard or piece), written by the pass and read back by the next."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from thresher.pipeline.layout import Layout


class IpcWriter:
    """Arrow IPC stream for intermediates; a batch with another schema is cast, or starts a segment."""

    def __init__(self, path: Path):
        self.path = path
        self.segments: list[Path] = []
        self._w = None
        self._sink = None
        self._schema = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._w is not None and not table.schema.equals(self._schema):
            conformed = conform(table, self._schema)
            if conformed is None:
                self.close()  # a new segment with this batch's schema
            else:
                table = conformed
        if self._w is None:
            seg = self.path.with_name(f"{self.path.name}.{len(self.segments):03d}")
            self.segments.append(seg)
            self._sink = pa.OSFile(str(seg), "wb")
            self._schema = table.schema
            self._w = pa.ipc.new_stream(self._sink, table.schema)
        self._w.write_table(table)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
            self._sink.close()
            self._w = None


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table | None:
    """``table`` with exactly ``schema`` (same columns, castable types), or None."""
    if set(table.schema.names) != set(schema.names):
        return None
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def read_intermediate(layout: Layout, k: int, shard: int) -> Iterator[pa.Table]:
    """The rows pass ``k`` kept of one shard, batch by batch, in the order they were written."""
    base = layout.intermediate(k, shard)
    for seg in sorted(base.parent.glob(base.name + ".*")):
        with pa.OSFile(str(seg), "rb") as f:
            reader = pa.ipc.open_stream(f)
            for rb in reader:
                yield pa.Table.from_batches([rb])
