"""Blocks of whole lines (``readers.iter_blocks``): read in place, each block completed to the end
of its line, so the blocks of a shard are exactly its bytes, cut only after newlines."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.pipeline.io.inputs import plan_shards, resolve_inputs
from thresher.pipeline.io.readers import ReadPos, iter_blocks

LINE = st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"x"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, max_size=60), final_newline=st.booleans(), block=st.integers(1, 700),
       shard_bytes=st.integers(64, 4000))
def test_blocks_are_the_shard_cut_after_newlines(tmp_path, lines, final_newline, block, shard_bytes):
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    shards = plan_shards(resolve_inputs([str(path)]), shard_bytes / (1 << 20)) if data else []
    got, next_line = [], 1
    for shard in shards:
        pos = ReadPos()
        assert shard.first_line == next_line
        for buf, first, n in iter_blocks(shard, block, pos):
            buf = bytes(buf)
            assert first == next_line
            assert n == buf.count(b"\n") + (not buf.endswith(b"\n"))  # lines in the block
            assert buf.endswith(b"\n") or shard.start + pos.bytes == len(data)  # only the file's end is cut short
            got.append(buf)
            next_line += n
        assert pos.bytes == (shard.end if shard.end >= 0 else len(data)) - shard.start
    assert b"".join(got) == data
