"""The plain JSONL reader reads every block of a shard into one buffer (``readers._plain_blocks``):
what it yields must not change when the next block is read."""

from __future__ import annotations

import json

from thresher.pipeline.io import readers
from thresher.pipeline.io.inputs import plan_shards, resolve_inputs
from thresher.pipeline.io.readers import read_shard


def test_batches_kept_across_blocks_keep_their_rows(tmp_path):
    lines = [json.dumps({"id": f"d{i}", "text": f"row {i} " + "é" * (i % 7) + "x" * (i % 300)}) for i in range(3000)]
    lines[1234] = '{"id": "bad", "text": '  # malformed: its block goes the slow way (Python's parser)
    lines[2345] = '{"id": "bad2", "text": "\xff"}'
    path = tmp_path / "in.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8").replace("\xff".encode(), b"\xff") + b"\n")
    (shard,) = plan_shards(resolve_inputs([str(path)]), 64)
    batches = list(read_shard(shard, "text", "id", 8 << 10))  # every batch held while later blocks are read
    assert len(batches) > 20
    rows = [r for b in batches for r in b.table.to_pylist()]
    expected = [json.loads(ln) for i, ln in enumerate(lines) if i not in (1234, 2345)]
    assert rows == expected
    assert [q["line"] for b in batches for q in b.quarantined] == [1235, 2346]


def test_one_buffer_for_a_shard(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"text": "y" * (i % 50)}) + "\n" for i in range(2000)))
    (shard,) = plan_shards(resolve_inputs([str(path)]), 64)
    seen = {id(block) for block in readers._plain_blocks(shard, 4096)}
    assert len(seen) == 1
