"""How a big plain JSONL file is cut into shards (``inputs._jsonl_ranges``): equal parts, each cut
after a newline, with true first line numbers, from the file alone (never the worker count)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thresher.pipeline.io import inputs
from thresher.pipeline.io.inputs import plan_shards, resolve_inputs

LINE = st.binary(max_size=120).map(lambda b: b.replace(b"\n", b"x"))


def shards_of(path, target: int):
    return plan_shards(resolve_inputs([str(path)]), target / (1 << 20))


def test_shards_are_equal_not_full_and_a_remainder(tmp_path):
    # 43 lines of 5 bytes (215 bytes) in shards of at most ~64: 4 shards of ~54, where cutting every
    # 64 bytes gave 65/65/65/20 (one of two workers idle for a quarter of the pass)
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"".join(b"%04d\n" % i for i in range(43)))
    shards = shards_of(path, 64)
    assert [(s.start, s.end, s.first_line) for s in shards] == [(0, 55, 1), (55, 110, 12), (110, 165, 23), (165, 215, 34)]
    assert [s.size for s in shards] == [55, 55, 55, 50]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINE, min_size=1, max_size=200), final_newline=st.booleans(),
       target=st.integers(16, 3000), scan=st.sampled_from([7, 64, 1 << 18]))
def test_cuts_follow_the_first_newline_after_each_nominal_end(tmp_path, lines, final_newline, target, scan):
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    if not data:
        return
    saved = inputs._SCAN_BLOCK
    inputs._SCAN_BLOCK = scan  # chunk edges anywhere: the result must not depend on them
    try:
        shards = shards_of(path, target)
    finally:
        inputs._SCAN_BLOCK = saved
    # the reference: n = ceil(size / target) parts; part i ends after the first newline at or after
    # size * i / n (and after the part before it); a cut at the end of the file is no cut
    size = len(data)
    n = -(-size // target) if size > target else 1
    cuts, start = [], 0
    for i in range(1, n):
        p = data.find(b"\n", max(size * i // n, start))
        if p < 0 or p + 1 >= size:
            break
        cuts.append(p + 1)
        start = p + 1
    bounds = [0, *cuts, size]
    assert [(s.start, s.end if s.end >= 0 else size) for s in shards] == list(zip(bounds[:-1], bounds[1:], strict=True))
    assert [s.first_line for s in shards] == [data.count(b"\n", 0, b) + 1 for b in bounds[:-1]]
    assert all(s.size > 0 for s in shards)
    longest = max(len(ln) for ln in lines) + 1
    if longest <= size // n:  # no line spans a part: n parts, each within a line of size / n
        assert len(shards) == n and all(abs(s.size - size / n) <= longest + 1 for s in shards)
