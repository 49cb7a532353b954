"""Live progress: events from where batches are read (by bytes within a shard, so one big file
moves), summed in the driver, shown live on a terminal or as one line per pass; LLM requests
and spend; quiet with -q."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ACCEPT_BAD_ROWS, make_recipe, sample_docs, write_jsonl
from thresher.pipeline.progress import LiveDisplay, PassLines, RunProgress, pass_line
from thresher.pipeline.run import run

ROOT = Path(__file__).resolve().parents[2]
PROCESS = [{"text_length_filter": {"min_words": 5}}, {"exact_dedup": {}}]


def _big_file(tmp_path: Path, n: int = 20000) -> Path:
    """A few MB of JSONL in one file."""
    docs = sample_docs(n, seed=3)
    docs += [dict(d, id=f"copy-{d['id']}") for d in docs[:500]]
    return write_jsonl(tmp_path / "big.jsonl", docs)


def _one_shard_many_blocks(src: Path, out: Path, **executor):
    # one shard (shard_size_mb above the file), blocks of 64 KB: dozens of blocks in the one file
    return make_recipe([src], out, PROCESS, input={"shard_size_mb": 1024},
                       executor={"batch_size_mb": 0.0625, **executor})


def _check_moves_within_the_file(progress: RunProgress, src: Path) -> None:
    fractions = progress.history[0]
    assert fractions == sorted(fractions), "the byte fraction never goes back"
    assert fractions[-1] == 1.0
    inside = {round(f, 3) for f in fractions if 0 < f < 1}
    assert len(inside) >= 3, f"the one shard's progress moves while it is read: {fractions}"
    v = progress.pass_view(0)
    assert v.shards == 1 and v.unit == "bytes" and v.finished
    n_in = sum(1 for _ in src.open(encoding="utf-8"))
    assert v.rows_in == n_in
    led = json.loads((Path(progress.out) / "ledger.json").read_text())
    assert v.rows_out == led["ops"]["text_length_filter"]["rows_out"]
    p1 = progress.pass_view(1)
    assert p1.unit == "rows" and p1.rows_in == v.rows_out and p1.rows_out == led["totals"]["output"]
    assert progress.history[1][-1] == 1.0


@pytest.fixture
def fast_events(monkeypatch):
    """Events every 20 ms in this process (where the in-process executor reads), so a pass of a
    fraction of a second still moves several times on a fast machine."""
    from thresher.pipeline import progress

    monkeypatch.setattr(progress, "INTERVAL_S", 0.02)


def test_one_big_file_moves_by_bytes(tmp_path, fast_events):
    src = _big_file(tmp_path)
    assert src.stat().st_size > 2 << 20
    progress = RunProgress(record=True)
    with progress:
        res = run(_one_shard_many_blocks(src, tmp_path / "out"), progress=progress)
    progress.out = res.out
    _check_moves_within_the_file(progress, src)
    r = progress.run_view()
    assert r.passes == 2 and r.fraction == 1.0 and r.rows == progress.pass_view(0).rows_in + progress.pass_view(1).rows_in


def test_a_process_pool_reports_through_its_queue(tmp_path):
    """Two workers, many shards: the events come from the pool's processes, rows add up exactly."""
    src = _big_file(tmp_path, 8000)
    progress = RunProgress(record=True)
    recipe = make_recipe([src], tmp_path / "out", PROCESS, workers=2, input={"shard_size_mb": 0.25},
                         executor={"batch_size_mb": 0.0625})
    with progress:
        run(recipe, progress=progress)
    v = progress.pass_view(0)
    assert v.shards > 2 and v.shards_done == v.shards
    assert v.rows_in == sum(1 for _ in src.open(encoding="utf-8"))
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert v.rows_out == led["ops"]["text_length_filter"]["rows_out"]
    assert progress.pass_view(1).rows_out == led["totals"]["output"]
    assert progress.history[0] == sorted(progress.history[0]) and progress.history[0][-1] == 1.0


def test_compressed_input_moves_by_compressed_bytes(tmp_path, fast_events):
    import gzip

    src = _big_file(tmp_path, 20000)
    gz = tmp_path / "big.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes(), compresslevel=1))
    progress = RunProgress(record=True)
    with progress:
        run(_one_shard_many_blocks(gz, tmp_path / "out", batch_size_mb=0.25), progress=progress)
    fractions = progress.history[0]
    assert fractions == sorted(fractions) and len({f for f in fractions if 0 < f < 1}) >= 2
    assert progress.pass_view(0).rows_in == sum(1 for _ in src.open(encoding="utf-8"))


@pytest.mark.slow
def test_one_big_file_moves_under_ray(tmp_path, local_ray):
    pytest.importorskip("ray")
    # a task sends its blocks' progress every INTERVAL_S (0.25 s) from its own process and the
    # driver hears of the shard only when it ends: a file big enough to take several seconds
    src = _big_file(tmp_path, 100_000)
    progress = RunProgress(record=True)
    with progress:
        res = run(_one_shard_many_blocks(src, tmp_path / "out", type="ray", workers=2), progress=progress)
    progress.out = res.out
    _check_moves_within_the_file(progress, src)
    # every block's record comes with its summary; the ones the tasks sent while they ran come twice
    records = [r for ev in progress.events if ev[0] == "b" and ev[1] == 0 for r in ev[2]]
    blocks = {(r[0], r[1]) for r in records}
    assert len(blocks) > 10 and len(records) > len(blocks), "the tasks' own events arrived"


def test_without_progress_nothing_is_tracked(tmp_path, monkeypatch):
    """API runs (no progress): no tracker is ever made, no thread started."""
    from thresher.pipeline import progress as mod

    made = []
    monkeypatch.setattr(mod.Tracker, "__init__", lambda self, *a, **kw: made.append(a))
    src = write_jsonl(tmp_path / "in.jsonl", sample_docs(50))
    run(make_recipe([src], tmp_path / "out", PROCESS))
    assert made == []


# ------------------------------------------------------------------------------------ LLM requests
@pytest.mark.parametrize("workers", [1, 2])
def test_llm_requests_and_spend_equal_the_ledger(tmp_path, fast_events, workers):
    """In this process (one worker) and from a process pool (two files, two workers)."""
    from tests.llm_test_server import ChatTestServer, default_answer

    chat_input = {"text_key": None}
    rows = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"question number {i}"}]} for i in range(24)]
    srcs = [write_jsonl(tmp_path / f"q{j}.jsonl", rows[j::workers]) for j in range(workers)]
    def answer(body: dict) -> str | None:  # question 5 fails for good (a 500 each time)
        last = body["messages"][-1]["content"]
        return None if last.endswith(" 5") else default_answer(body)

    with ChatTestServer(answer) as server:
        llm = {"base_url": server.url, "model": "m", "max_retries": 1, "backoff_s": 0.01, "concurrency": 4,
               "cache_dir": str(tmp_path / "cache"), "usd_per_million_input": 3.0, "usd_per_million_output": 5.0}
        recipe = make_recipe(srcs, tmp_path / "out", [{"llm_respond": {"llm": llm}}], input=chat_input,
                             policy=ACCEPT_BAD_ROWS, workers=workers, executor={"batch_size_mb": 0.0005})
        lines = io.StringIO()
        progress = RunProgress(PassLines(lines))
        with progress:
            res = run(recipe, progress=progress)
    c = res.ledger["llm_respond"].counters
    assert c["llm_requests"] == 24 and c["llm_failed"] == 1 and c["llm_cost_micro_usd"] > 0
    llm = progress.llm()
    assert (llm.done, llm.failed, round(llm.spend_micro_usd), llm.in_flight) == (
        c["llm_requests"], c["llm_failed"], c["llm_cost_micro_usd"], 0)
    v = progress.pass_view(0)
    assert (v.llm.done, v.llm.failed, round(v.llm.spend_micro_usd)) == (24, 1, c["llm_cost_micro_usd"])
    (line,) = lines.getvalue().splitlines()
    assert line.startswith("pass 0: 24 rows in, 23 out, ") and "LLM 24 requests, 1 failed, $" in line


def test_llm_counters_count_requests_in_flight():
    """``llm.LIVE``: in flight while a request runs; done, failed and spend (cache hits free) after."""
    from thresher.pipeline.llm import LIVE, Completion, LLMConfig

    cfg = LLMConfig(usd_per_million_input=2.0, usd_per_million_output=4.0)
    before = LIVE.snapshot()
    LIVE.begin()
    LIVE.begin()
    assert LIVE.snapshot()[3] == before[3] + 2
    LIVE.end(Completion("ok", prompt_tokens=10, completion_tokens=5), cfg)
    LIVE.end(Completion(None, "boom"), cfg)
    LIVE.begin()
    LIVE.end(Completion("hit", cached=True, prompt_tokens=10), cfg)
    LIVE.begin()
    LIVE.end(None, cfg)  # cancelled: not done
    done, failed, spend, in_flight = LIVE.snapshot()
    assert (done - before[0], failed - before[1], spend - before[2], in_flight) == (3, 1, 40.0, before[3])


# ------------------------------------------------------------------------------------ renderers
def test_live_display_shows_rows_per_second_and_eta():
    from rich.console import Console

    progress = RunProgress(record=False)
    progress.start_pass(0, {0: 1000, 1: 1000}, "bytes", passes=2)
    progress.put(("s", 0, 0, 500, 1200, 1000, False))
    progress.put(("l", "host:1", 7, 1, 1234.0, 3))
    progress._passes[0].t0 -= 2.0  # two seconds in
    progress.t0 -= 2.0
    display = LiveDisplay(None)
    display.progress = progress
    buf = io.StringIO()
    Console(file=buf, force_terminal=True, width=160).print(display.renderable())
    text = re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue())
    assert "pass 0" in text and "25%" in text
    assert "1,200 in → 1,000 out" in text
    m = re.search(r"([\d,]+) rows/s", text)
    assert m and 550 <= int(m.group(1).replace(",", "")) <= 600  # 1,200 rows in about 2 s
    assert "ETA 0:06" in text  # a quarter done in 2 s: 6 s to go
    assert "run" in text and "pass 1 of 2" in text
    assert "LLM" in text and "7 done, 3 in flight, 1 failed" in text and "$0.0012" in text


def test_plain_line_per_pass():
    progress = RunProgress(PassLines(buf := io.StringIO()))
    with progress:
        progress.start_pass(0, {0: 10}, "bytes", passes=1)
        progress.put(("s", 0, 0, 10, 12000, 9500, True))
        progress.shard_done(0, 0)
        progress._passes[0].t0 -= 3.9
        progress.end_pass(0)
    (line,) = buf.getvalue().splitlines()
    assert re.fullmatch(r"pass 0: 12,000 rows in, 9,500 out, 3,0\d\d rows/s, 3\.9 s", line), line
    resumed = RunProgress()
    resumed.start_pass(1, {}, "rows")
    resumed.end_pass(1)
    assert pass_line(resumed.pass_view(1)) == "pass 1: done in an earlier attempt"


# ------------------------------------------------------------------------------------ the command line
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "thresher", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160", **(env or {})}, timeout=300)


def _recipe_file(tmp_path: Path, src: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"input": {"paths": [str(src)]}, "output": {"path": str(tmp_path / "unused")},
                                "executor": {"type": "local", "workers": 1}, "process": PROCESS}))
    return path


def test_cli_not_a_terminal_one_line_per_pass(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", sample_docs(300) + sample_docs(30))
    res = _cli("run", str(_recipe_file(tmp_path, src)), "--output", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr
    for k, line in enumerate(lines):
        assert re.fullmatch(rf"pass {k}: [\d,]+ rows in, [\d,]+ out, [\d,]+ rows/s, [\d.]+ s", line), line
    assert lines[0].startswith("pass 0: 330 rows in, ")
    led = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert lines[1].startswith(f"pass 1: {led['ops']['exact_dedup']['rows_in']:,} rows in, {led['totals']['output']:,} out")
    assert "ledger" in res.stdout and "\x1b[" not in res.stderr  # the ledger on stdout, no terminal codes


def test_cli_quiet_prints_nothing(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", sample_docs(100))
    res = _cli("run", str(_recipe_file(tmp_path, src)), "--output", str(tmp_path / "out"), "-q")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""
    bad = _cli("run", str(_recipe_file(tmp_path, tmp_path / "missing.jsonl")), "--output", str(tmp_path / "o2"), "-q")
    assert bad.returncode == 2 and bad.stdout == "" and "error:" in bad.stderr and "pass 0" not in bad.stderr
