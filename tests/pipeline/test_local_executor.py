"""The local executor: fused passes, deterministic output for any worker count, atomic writes,
op errors isolated to their rows, the ledger balanced."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from tests.conftest import (
    ACCEPT_BAD_ROWS,
    make_recipe,
    read_output,
    read_quarantine,
    run_recipe,
    sample_docs,
    write_jsonl,
)
from thresher.pipeline.columns import LINE, STATS
from thresher.pipeline.errors import OutputError
from thresher.pipeline.ops import Mapper
from thresher.pipeline.plan import make_plan
from thresher.pipeline.registry import _REGISTRY, register

PROCESS = [
    {"unicode_normalize": {"form": "NFKC"}},
    {"whitespace_normalize": {}},
    {"text_length_filter": {"min_words": 5}},
    {"exact_dedup": {}},
    {"text_length_filter": {"max_words": 60}},
]


def corpus(tmp_path, files=3, n=400):
    paths = []
    docs = sample_docs(n * files, seed=3)
    for i in range(files):
        part = docs[i * n:(i + 1) * n]
        part += [dict(d, id=f"copy-{i}-{d['id']}") for d in part[:40]]  # duplicates inside and across files
        paths.append(write_jsonl(tmp_path / "in" / f"f{i}.jsonl", part))
    return paths


def snapshot(out):
    files = {}
    for f in sorted(out.rglob("*")):
        if f.is_file() and f.name not in ("ledger.json", "_thresher.json", "report.html"):  # the report shows timings
            files[str(f.relative_to(out))] = f.read_bytes()
    ledger = json.loads((out / "ledger.json").read_text())
    for e in ledger["ops"].values():
        e.pop("seconds")
    ledger["run"].pop("timings")  # wall seconds
    assert len(ledger["run"].pop("run_id")) == 32  # each run's own id (kept by --resume)
    manifest = json.loads((out / "_thresher.json").read_text())
    manifest.pop("run_id")
    return files, ledger, manifest


def test_plan_fuses_local_ops_and_breaks_at_global_ops():
    r = make_recipe(["x.jsonl"], "o", PROCESS)
    stages = make_plan(r.build_ops())
    assert [[op.name for op in s.local_ops] for s in stages] == [
        ["unicode_normalize", "whitespace_normalize", "text_length_filter"], ["text_length_filter"]]
    assert stages[0].barrier.name == "exact_dedup" and stages[1].barrier is None


def test_ledger_records_where_the_time_went(tmp_path):
    paths = corpus(tmp_path, files=2, n=200)
    run_recipe(paths, tmp_path / "o", PROCESS, workers=2, input={"shard_size_mb": 0.02})
    t = json.loads((tmp_path / "o" / "ledger.json").read_text())["run"]["timings"]
    assert t["executor"] == "local" and [p["pass"] for p in t["passes"]] == [0, 1]
    assert t["passes"][0]["resolve"] == "exact_dedup" and "resolve" not in t["passes"][1]
    assert all(p["shards"] >= 2 for p in t["passes"])
    parts = t["start_seconds"] + sum(p["seconds"] + p.get("resolve_seconds", 0) for p in t["passes"])
    assert 0 < parts <= t["seconds"]


def test_one_and_two_workers_give_byte_identical_output(tmp_path):
    paths = corpus(tmp_path)
    common = dict(input={"shard_size_mb": 0.02}, output={"rows_per_shard": 150, "keep_stats": True})
    r1 = run_recipe(paths, tmp_path / "w1", PROCESS, workers=1, **common)
    r2 = run_recipe(paths, tmp_path / "w2", PROCESS, workers=2, **common)
    assert r1.output_rows == r2.output_rows > 0
    s1, s2 = snapshot(tmp_path / "w1"), snapshot(tmp_path / "w2")
    assert s1 == s2
    assert len([f for f in s1[0] if f.startswith("data/")]) > 3  # several shards really ran


def test_funnel_and_balance(tmp_path):
    paths = corpus(tmp_path, files=2, n=300)
    res = run_recipe(paths, tmp_path / "o", PROCESS, input={"shard_size_mb": 0.02})
    led = json.loads((tmp_path / "o" / "ledger.json").read_text())
    ops = led["ops"]
    assert led["balanced"]
    assert ops["read"]["rows_in"] == 2 * 340
    assert ops["text_length_filter"]["dropped"]["too_few_words"] > 0
    # expected duplicates, computed independently: rows passing the first filter minus distinct texts
    rows_in = [json.loads(x) for p in paths for x in p.read_text().splitlines()]
    long_enough = [" ".join(r["text"].lower().split()) for r in rows_in if len(r["text"].split()) >= 5]
    assert ops["exact_dedup"]["dropped"]["exact_duplicate"] == len(long_enough) - len(set(long_enough)) > 0
    assert ops["text_length_filter_2"]["dropped"]["too_many_words"] > 0
    total_dropped = sum(sum(e["dropped"].values()) for e in ops.values())
    assert ops["read"]["rows_in"] == res.output_rows + total_dropped
    # output rows satisfy both filters and are unique
    rows = read_output(tmp_path / "o")
    assert all(5 <= len(r["text"].split()) <= 60 for r in rows)
    assert len({r["text"].lower() for r in rows}) == len(rows)
    # no temp files or scratch left; _SUCCESS marks completion
    out = tmp_path / "o"
    assert not list(out.rglob("*.tmp")) and not (out / "_work").exists() and (out / "_SUCCESS").exists()


def test_keep_stats_and_trace(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", [{"id": "short", "text": "too short"},
                                             {"id": "long", "text": "one two three four five six"}])
    run_recipe([src], tmp_path / "o", [{"text_length_filter": {"min_words": 3}}],
               output={"keep_stats": True, "trace_samples": 5})
    (row,) = read_output(tmp_path / "o")
    assert row[STATS]["text_length_filter"] == {"num_chars": 27, "num_words": 6}
    (trace,) = [json.loads(x) for x in (tmp_path / "o" / "trace" / "00-text_length_filter.jsonl").read_text().splitlines()]
    assert trace["id"] == "short" and trace["reason"] == "too_few_words" and trace["stats"]["num_words"] == 2


@pytest.fixture
def exploding_op():
    """A real registered op that fails on rows containing BOOM (an op bug in the wild)."""

    class ExplodeOnBoom(Mapper):
        """Upper-cases text; raises on rows that contain BOOM."""

        name = "test_explode_on_boom"

        def process(self, batch: pa.Table) -> pa.Table:
            texts = batch[self.text_key].to_pylist()
            if any("BOOM" in t for t in texts):
                raise ValueError("cannot handle BOOM")
            return batch.set_column(batch.column_names.index(self.text_key), self.text_key,
                                    pa.array([t.upper() for t in texts]))

    register(ExplodeOnBoom)
    yield ExplodeOnBoom.name
    _REGISTRY.pop(ExplodeOnBoom.name)


def test_op_error_quarantines_only_failing_rows(tmp_path, exploding_op):
    docs = [{"id": str(i), "text": f"row {i}" + (" BOOM" if i in (3, 17) else "")} for i in range(40)]
    src = write_jsonl(tmp_path / "a.jsonl", docs)
    res = run_recipe([src], tmp_path / "o", [{exploding_op: {}}])
    assert res.output_rows == 38
    assert [r["text"] for r in read_output(tmp_path / "o")] == [f"ROW {i}" for i in range(40) if i not in (3, 17)]
    q = read_quarantine(tmp_path / "o")
    assert sorted(r["id"] for r in q) == ["17", "3"]
    assert all(r["stage"] == exploding_op and "cannot handle BOOM" in r["reason"] for r in q)
    led = json.loads((tmp_path / "o" / "ledger.json").read_text())
    assert led["balanced"] and led["ops"][exploding_op]["quarantined"] == {"op error: ValueError": 2}


def test_rows_an_op_quarantines_name_their_file_and_line(tmp_path, exploding_op):
    """They recorded the row id as `source` and 0 as `line`. Now file and line, like a bad input
    line, also after a global op (pass 1); the line column is never written out."""
    docs = [{"id": f"r{i}", "text": f"row {i}" + (" BOOM" if i in (3, 17) else "")} for i in range(40)]
    docs.insert(10, {"id": "dup", "text": "row 5"})  # line 11, a duplicate for exact_dedup
    src = write_jsonl(tmp_path / "in" / "b.jsonl", docs)
    lines = {"r3": 4, "r17": 19}
    for process in ([{exploding_op: {}}, {"exact_dedup": {}}], [{"exact_dedup": {}}, {exploding_op: {}}]):
        out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
        res = run_recipe([src], out, process, policy=ACCEPT_BAD_ROWS)
        q = sorted(read_quarantine(out), key=lambda r: r["line"])
        assert [(r["source"], r["line"], r["id"], r["stage"]) for r in q] == [
            ("b.jsonl", lines[i], i, exploding_op) for i in ("r3", "r17")]
        rows = read_output(out)
        assert res.output_rows == len(rows) == 38 and all(set(r) == {"id", "text"} for r in rows)


def test_rows_an_op_quarantines_on_ray_name_their_file_and_line(tmp_path, local_ray):
    rows = [{"id": "a1", "instruction": "Say hi", "output": "hi"}, {"id": "a1b", "instruction": "Say hi", "output": "x"},
            {"id": "x1", "foo": "bar"}, {"id": "a2", "instruction": "Say bye", "output": "bye"}]
    src = write_jsonl(tmp_path / "chat.jsonl", rows)
    for process in ([{"chat_format": {}}], [{"exact_dedup": {"field": "id"}}, {"chat_format": {}}]):
        out = tmp_path / f"o{len(process)}"
        run_recipe([src], out, process, input={"text_key": None}, executor={"type": "ray"}, policy=ACCEPT_BAD_ROWS)
        (q,) = read_quarantine(out)
        assert (q["source"], q["line"], q["id"]) == ("chat.jsonl", 3, "x1") and q["reason"].startswith("unknown")
        assert all(LINE not in r for r in read_output(out))


def test_exact_dedup_keeps_first_in_input_order_across_shards(tmp_path):
    a = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a1", "text": "Same  Text"}, {"id": "a2", "text": "other"}])
    b = write_jsonl(tmp_path / "in" / "b.jsonl", [{"id": "b1", "text": "same text"}, {"id": "b2", "text": "Other"}])
    # input order: paths in the order given...
    run_recipe([b, a], tmp_path / "o", [{"exact_dedup": {}}], workers=2)
    assert [r["id"] for r in read_output(tmp_path / "o")] == ["b1", "b2"]
    # ...and a directory's files in sorted order
    run_recipe([tmp_path / "in"], tmp_path / "o2", [{"exact_dedup": {}}], workers=2)
    assert [r["id"] for r in read_output(tmp_path / "o2")] == ["a1", "a2"]


def test_rerun_replaces_finished_output_but_refuses_unfinished_or_foreign(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", sample_docs(20))
    run_recipe([src], tmp_path / "o", [])
    run_recipe([src], tmp_path / "o", [{"text_length_filter": {"min_words": 30}}])  # finished: replaced
    assert all(len(r["text"].split()) >= 30 for r in read_output(tmp_path / "o"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a thresher output"):
        run_recipe([src], foreign, [])
    assert (foreign / "notes.txt").exists()


def test_empty_result_is_still_a_complete_balanced_run(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", sample_docs(30))
    res = run_recipe([src], tmp_path / "o", [{"text_length_filter": {"min_words": 10_000}}])
    assert res.output_rows == 0 and (tmp_path / "o" / "_SUCCESS").exists()


def test_a_long_lived_process_keeps_the_ops_of_a_few_recent_runs_only(tmp_path):
    """Each run attempt builds its ops (and loads their models) once per process; a notebook that runs
    many recipes must not keep every earlier run's ops alive."""
    from thresher.pipeline.executors import passes

    src = write_jsonl(tmp_path / "a.jsonl", sample_docs(10))
    for i in range(passes._OPS_CACHE_SIZE + 3):
        run_recipe([src], tmp_path / f"o{i}", PROCESS)
    assert len(passes._OPS_CACHE) <= passes._OPS_CACHE_SIZE


def _worker_env(_: int) -> dict:
    import os
    import sys

    return {"pool": os.environ.get("ARROW_DEFAULT_MEMORY_POOL"), "mmap": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
            "registry_loaded": "thresher.operators.filter.langid" in sys.modules}


def test_workers_return_freed_memory_and_import_only_the_recipes_ops(tmp_path, monkeypatch):
    """Pool workers get the allocator settings (unless the user set them), and a worker that builds
    an unpickled recipe's ops imports those ops' modules, not every operator."""
    import pickle
    import subprocess
    import sys

    from thresher.pipeline.executors.local import LocalExecutor, worker_allocator_env
    from thresher.pipeline.recipe import parse_recipe

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "2097152")
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    seen = []
    with LocalExecutor(2) as ex:
        ex.map(_worker_env, [(0,), (1,)], seen.append)
    assert all(s["pool"] == worker_allocator_env()["ARROW_DEFAULT_MEMORY_POOL"] in ("jemalloc", "system")
               and s["mmap"] == "2097152" for s in seen)

    recipe = parse_recipe("input: {paths: [x.jsonl]}\noutput: {path: out}\nprocess: [{exact_dedup: {}}]\n")
    (tmp_path / "r.pkl").write_bytes(pickle.dumps(recipe))
    code = ("import pickle, sys\nr = pickle.load(open(sys.argv[1], 'rb'))\nops = r.build_ops()\n"
            "print(ops[0].name, 'thresher.operators.filter.langid' in sys.modules, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r.pkl")], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["exact_dedup", "False", "False"]


def _wait_for(i: int, flag: str) -> tuple[int, bool]:
    """Task 0 returns at once; task 1 waits until the driver has handled task 0's result."""
    import time
    from pathlib import Path

    if i == 0:
        return 0, True
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if Path(flag).exists():
            return 1, True
        time.sleep(0.05)
    return 1, False


def test_map_hands_each_result_over_as_it_finishes(tmp_path):
    """The driver handles a shard's result (its done marker, the rows the next pass has consumed)
    while the other shards still run, not after the whole pass: task 1 finishes only once the
    driver has seen task 0's result."""
    from thresher.pipeline.executors.local import LocalExecutor

    flag = tmp_path / "seen-0"
    results = []

    def on_done(r):
        results.append(r)
        if r[0] == 0:
            flag.touch()

    with LocalExecutor(2) as ex:
        ex.map(_wait_for, [(0, str(flag)), (1, str(flag))], on_done)
    assert sorted(results) == [(0, True), (1, True)]
