"""`thresher show`: kept, dropped (trace sample) and quarantined rows of real runs, drawn by shape,
with reasons and stats; one-line errors; the pager in a real terminal (tmux)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import read_output, read_quarantine, run_recipe, sample_docs, write_jsonl
from thresher.pipeline.cli import main
from thresher.pipeline.show import fmt_value, stats_line

ROOT = Path(__file__).resolve().parents[2]
HEAD = re.compile(r"^#(\d+) (\S+)(?:  (\S+): (.+))?$")


def _run(*argv: str) -> None:
    assert main(list(argv)) == 0


def show(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["show", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def heads(out: str) -> list[tuple[str, str | None, str | None]]:
    """(id, op, reason) of each row header, in order."""
    found = []
    for line in out.splitlines():
        m = HEAD.match(line)
        if m:
            found.append((m.group(2), m.group(3), m.group(4)))
    return found


def flat(s: str) -> str:
    return " ".join(s.split())


def trace(out: Path, op_key: str) -> list[dict]:
    [f] = (out / "trace").glob(f"*-{op_key}.jsonl")
    return [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- outputs (one run each)
@pytest.fixture(scope="module")
def quick(tmp_path_factory, _session_cache) -> Path:
    out = tmp_path_factory.mktemp("show") / "qs"
    _run("run", "quickstart", "--output", str(out), "-q", "--set", "output.keep_stats=true")
    return out


def _chat_rows() -> list[dict]:
    topics = ["tides", "volcanoes", "bread", "comets", "glaciers", "bees", "clocks", "maps"]
    rows = []
    for i, t in enumerate(topics):
        rows.append({"id": f"c{i}", "messages": [
            {"role": "system", "content": f"You answer questions about {t}."},
            {"role": "user", "content": f"What is special about {t}?"},
            {"role": "assistant", "content": f"Many things are special about {t}; people have studied them for years."},
            {"role": "user", "content": f"Name one fact about {t}, please."},
            {"role": "assistant", "content": f"One fact: {t} change slowly over long periods of time."}]})
    rows += [{"id": f"short{i}", "messages": [{"role": "user", "content": f"Say yes to question {i}."},
                                               {"role": "assistant", "content": "Yes."}]} for i in range(3)]
    rows.append({"id": "refusal", "messages": [{"role": "user", "content": "Tell me a joke about bread."},
                                               {"role": "assistant", "content": "As an AI language model, I cannot tell jokes."}]})
    rows.append({"id": "broken", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                              {"role": "assistant", "content": "c"}]})
    return rows


@pytest.fixture(scope="module")
def chat(tmp_path_factory, _session_cache) -> Path:
    base = tmp_path_factory.mktemp("show-chat")
    inp = write_jsonl(base / "chat.jsonl", _chat_rows())
    recipe = base / "chat.yaml"
    recipe.write_text(json.dumps({
        "input": {"paths": [str(inp)], "text_key": None},
        "output": {"path": str(base / "out"), "format": "parquet", "keep_stats": True},
        "policy": {"max_quarantine_fraction": 1.0},
        "executor": {"type": "local", "workers": 1}, "seed": 1,
        "process": [{"chat_format": {"source": "auto"}}, {"refusal_filter": {}},
                    {"chat_length_filter": {"min_response_tokens": 4}}]}))
    _run("run", str(recipe), "-q")
    return base / "out"


@pytest.fixture(scope="module")
def dpo(tmp_path_factory, _session_cache) -> Path:
    out = tmp_path_factory.mktemp("show-dpo") / "dpo"
    _run("run", "dpo-from-ranked", "--output", str(out), "-q", "--set", "output.format=jsonl.gz")
    return out


# --------------------------------------------------------------------------- kept
def test_kept_rows_are_the_first_real_rows_and_n_limits(quick, capsys):
    rows = read_output(quick)
    rc, out, _ = show(capsys, str(quick), "-n", "3")
    assert rc == 0
    assert f"showing 3 of {len(rows):,} kept rows" in out
    assert [h[0] for h in heads(out)] == [r["id"] for r in rows[:3]]
    assert "\x1b[" not in out  # not a terminal: plain text
    assert flat(rows[0]["text"][:300]) in flat(out)  # the row's own text (cut later, not here)
    assert f"url={rows[0]['url']}" in out
    rc, out, _ = show(capsys, str(quick), "--kept", "-n", "1")
    assert [h[0] for h in heads(out)] == [rows[0]["id"]]
    rc, out, _ = show(capsys, str(quick), "-n", "1", "--full")
    assert flat(rows[0]["text"]) in flat(out) and "--full shows all" not in out


def test_kept_with_op_shows_that_ops_stats(quick, capsys):
    rows = read_output(quick)
    rc, out, _ = show(capsys, str(quick), "--op", "text_length_filter", "-n", "2")
    assert rc == 0
    for r in rows[:2]:
        assert f"text_length_filter: {stats_line(r['__stats__']['text_length_filter'])}" in out
    rc, out, _ = show(capsys, str(quick), "--op", "exact_dedup", "-n", "2")
    assert "exact_dedup kept no stats" in out and "text_length_filter:" not in out


def test_kept_reads_parquet_and_gz_lazily(chat, dpo, capsys):
    for out_dir in (chat, dpo):
        rows = read_output(out_dir)
        rc, out, _ = show(capsys, str(out_dir), "-n", "2")
        assert rc == 0 and [h[0] for h in heads(out)] == [r["id"] for r in rows[:2]]


def test_kept_reads_only_what_the_rows_shown_need(quick, chat, tmp_path, capsys):
    # what lies past the rows shown is never read: garbage there goes unnoticed
    qs = tmp_path / "qs"
    shutil.copytree(quick, qs)
    [part] = (qs / "data").glob("part-*.jsonl")
    lines = part.read_text(encoding="utf-8").splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + "{not json\n" + "".join(lines[3:]), encoding="utf-8")
    rc, out, _ = show(capsys, str(qs), "-n", "3")
    assert rc == 0 and len(heads(out)) == 3
    ch = tmp_path / "chat"
    shutil.copytree(chat, ch)
    (ch / "data" / "part-99999-000.parquet").write_bytes(b"not parquet")
    rc, out, _ = show(capsys, str(ch), "-n", "2")
    assert rc == 0 and len(heads(out)) == 2


def test_stats_are_key_value_with_four_significant_digits():
    assert stats_line({"mean_word_length": 4.123456, "num_words": 12, "ok": True, "lang": "en"}) == \
        "mean_word_length=4.123 num_words=12 ok=true lang=en"
    assert fmt_value(0.000123456) == "0.0001235" and fmt_value(123456.7) == "1.235e+05"


# --------------------------------------------------------------------------- dropped
def test_dropped_op_and_reason_shows_that_sample_with_its_stats(quick, capsys):
    led = json.loads((quick / "ledger.json").read_text())
    n_dropped = led["ops"]["text_length_filter"]["dropped"]["too_few_words"]
    recs = trace(quick, "text_length_filter")
    rc, out, _ = show(capsys, str(quick), "--dropped", "--op", "text_length_filter", "--reason", "too_few_words", "-n", "5")
    assert rc == 0
    assert f"showing 5 of {n_dropped:,} dropped rows" in out and "(trace sample)" in out
    h = heads(out)
    assert [x[0] for x in h] == [r["id"] for r in recs[:5]]
    assert {(x[1], x[2]) for x in h} == {("text_length_filter", "too_few_words")}
    stat_lines = [line.strip() for line in out.splitlines() if line.strip().startswith("num_chars=")]
    assert stat_lines == [stats_line(r["stats"]) for r in recs[:5]]
    # --reason alone means dropped rows, from whichever op recorded it
    rc, out2, _ = show(capsys, str(quick), "--reason", "too_few_words", "-n", "5")
    assert heads(out2) == h


def test_dropped_without_op_covers_every_op_and_reason(quick, capsys):
    rc, out, _ = show(capsys, str(quick), "--dropped", "-n", "4")
    assert rc == 0 and "showing 4 of 202 dropped rows (trace sample)" in out
    h = heads(out)
    assert {(x[1], x[2]) for x in h} == {("text_length_filter", "too_few_words"), ("exact_dedup", "exact_duplicate")}
    assert [x[1] for x in h] == sorted((x[1] for x in h), key=["text_length_filter", "exact_dedup"].index)
    ids = {r["id"] for r in trace(quick, "text_length_filter") + trace(quick, "exact_dedup")}
    assert {x[0] for x in h} <= ids


def test_op_is_a_key_or_a_name(tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", sample_docs(200))
    out = tmp_path / "out"
    run_recipe([inp], out, [{"text_length_filter": {"min_words": 5}}, {"text_length_filter": {"min_words": 20}}])
    for key in ("text_length_filter", "text_length_filter_2"):  # each use of an op by its key (as in the ledger)
        rc, text, _ = show(capsys, str(out), "--dropped", "--op", key, "-n", "100")
        assert {x[1] for x in heads(text)} == {key} and len(heads(text)) == len(trace(out, key))


def test_float_stats_of_a_real_filter_to_four_significant_digits(tmp_path, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", sample_docs(100))
    out = tmp_path / "out"
    run_recipe([inp], out, [{"gopher_quality_filter": {}}])
    by_id = {r["id"]: r for r in trace(out, "gopher_quality_filter")}
    rc, text, _ = show(capsys, str(out), "--dropped", "-n", "20")
    shown = [by_id[h[0]] for h in heads(text)]
    assert len(shown) == 20 and all(h[1] == "gopher_quality_filter" for h in heads(text))
    for r in shown:
        assert flat(stats_line(r["stats"])) in flat(text)
    long = [r["stats"]["mean_word_length"] for r in shown if len(repr(r["stats"]["mean_word_length"])) > 6]
    assert long, "some mean word length has more than 4 significant digits"
    for v in long:
        assert f"mean_word_length={v:.4g} " in flat(text) and f"mean_word_length={v} " not in flat(text)


def test_op_by_a_former_name(tmp_path, capsys):
    out = tmp_path / "sft"
    _run("run", "sft-clean", "--output", str(out), "-q")
    rc, text, _ = show(capsys, str(out), "--dropped", "--op", "decontaminate")  # now decontamination_filter
    assert rc == 0 and {x[1] for x in heads(text)} == {"decontamination_filter"}


def test_chat_rows_are_turns_in_order(chat, capsys):
    rows = read_output(chat)
    rc, out, _ = show(capsys, str(chat), "-n", "2")
    assert rc == 0
    assert [h[0] for h in heads(out)] == [r["id"] for r in rows[:2]]
    text = flat(out)
    for r in rows[:2]:
        turns = " ".join(f"{m['role']} {m['content']}" for m in r["messages"])
        assert flat(turns) in text  # each turn under its role label, in the conversation's order
    assert "chosen" not in text and "candidates" not in text  # null canonical columns are not shown
    assert "chat_length_filter: prompt_tokens=" in out and "refusal_filter: refusal_phrases=0" in out


def test_chat_dropped_rows_show_turns_reason_and_stats(chat, capsys):
    recs = trace(chat, "chat_length_filter")
    assert {r["reason"] for r in recs} == {"response_too_short"}
    rc, out, _ = show(capsys, str(chat), "--dropped", "--op", "chat_length_filter", "--reason", "response_too_short")
    assert rc == 0 and f"showing {len(recs)} of 3 dropped rows" in out
    assert [h[0] for h in heads(out)] == [r["id"] for r in recs]
    for r in recs:
        assert flat(" ".join(f"{m['role']} {m['content']}" for m in r["content"]["messages"])) in flat(out)
        assert stats_line(r["stats"]) in out
    rc, out, _ = show(capsys, str(chat), "--dropped", "--op", "refusal_filter")
    assert heads(out) == [("refusal", "refusal_filter", "refusal_or_boilerplate")]
    assert "refusal_phrases=1" in out and "As an AI language model" in out


def test_preference_rows_show_conversation_then_chosen_and_rejected(dpo, capsys):
    rows = read_output(dpo)
    rc, out, _ = show(capsys, str(dpo), "-n", "1")
    r = rows[0]
    expected = " ".join([f"{m['role']} {m['content']}" for m in r["prompt"]] + [f"chosen {r['chosen'][0]['content']}",
                        f"rejected {r['rejected'][0]['content']}"])
    assert flat(expected) in flat(out)


def test_reason_with_drops_but_no_trace_samples_is_said(tmp_path, capsys, _session_cache):
    out = tmp_path / "qs0"
    _run("run", "quickstart", "--output", str(out), "-q", "--set", "output.trace_samples=0")
    rc, text, _ = show(capsys, str(out), "--dropped", "--op", "text_length_filter", "--reason", "too_few_words")
    assert rc == 0 and "showing 0 of 119 dropped rows" in text
    assert "dropped 119 rows for 'too_few_words' but trace/ holds no samples" in flat(text)
    rc, _, err = show(capsys, str(out), "--dropped", "--op", "text_length_filter", "--reason", "too_short")
    assert rc == 2 and "too_few_words (119 dropped, no samples in trace)" in err


# --------------------------------------------------------------------------- quarantined
def test_quarantined_shows_file_line_and_reason(quick, capsys):
    recs = read_quarantine(quick)
    rc, out, _ = show(capsys, str(quick), "--quarantined")
    assert rc == 0 and f"showing {len(recs)} of {len(recs)} quarantined rows" in out
    lines = out.splitlines()
    for i, r in enumerate(recs, 1):
        head = f"#{i} {r['source']}:{r['line']}  {r['stage']}: "
        assert any(line.startswith(head) for line in lines), head
        assert flat(r["reason"]) in flat(out) and flat(r["raw"]) in flat(out)
    rc, out, _ = show(capsys, str(quick), "--quarantined", "--reason", "malformed JSON")
    [one] = [r for r in recs if r["reason"].startswith("malformed JSON")]
    assert [h[0] for h in heads(out)] == [f"{one['source']}:{one['line']}"] and "showing 1 of 1 quarantined" in out


# --------------------------------------------------------------------------- errors
def _one_line_error(capsys, *argv) -> str:
    rc, out, err = show(capsys, *argv)
    assert rc == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_unknown_op_and_reason_are_one_line_errors(quick, capsys):
    err = _one_line_error(capsys, str(quick), "--dropped", "--op", "text_lenght_filter")
    assert "no op 'text_lenght_filter'" in err and "text_length_filter, exact_dedup" in err
    assert "Did you mean 'text_length_filter'?" in err
    err = _one_line_error(capsys, str(quick), "--dropped", "--op", "text_length_filter", "--reason", "too_many_words")
    assert "recorded no dropped rows for reason 'too_many_words'" in err and "too_few_words (119 dropped)" in err
    err = _one_line_error(capsys, str(quick), "--reason", "nope")
    assert "text_length_filter: too_few_words (119 dropped)" in err and "exact_dedup: exact_duplicate (83 dropped)" in err
    err = _one_line_error(capsys, str(quick), "--kept", "--reason", "too_few_words")
    assert "--dropped" in err
    _one_line_error(capsys, str(quick), "-n", "0")


def test_not_an_output_and_analyze_outputs(quick, tmp_path, capsys):
    err = _one_line_error(capsys, str(tmp_path))
    assert "not a thresher output (no ledger.json)" in err
    _one_line_error(capsys, str(tmp_path / "missing"))
    # an analyze output: stats.parquet and trace/, no data/
    an = tmp_path / "an"
    shutil.copytree(quick / "trace", an / "trace")
    shutil.copy(quick / "ledger.json", an / "ledger.json")
    pq.write_table(pa.table({"num_words": [1, 2]}), an / "stats.parquet")
    err = _one_line_error(capsys, str(an))
    assert "analyze output" in err and "stats" in err and "not rows" in err
    rc, out, _ = show(capsys, str(an), "--dropped", "--op", "exact_dedup", "-n", "2")
    assert rc == 0 and [h[0] for h in heads(out)] == [r["id"] for r in trace(quick, "exact_dedup")[:2]]


def test_a_real_analyze_output(tmp_path, capsys, _session_cache):
    import importlib.util

    if importlib.util.find_spec("thresher.pipeline.analyze") is None:
        pytest.skip("this build has no `thresher analyze`")
    an = tmp_path / "an"
    _run("analyze", "quickstart", "--output", str(an))
    capsys.readouterr()
    assert (an / "stats.parquet").is_file() and not (an / "data").exists()
    err = _one_line_error(capsys, str(an), "-n", "2")
    assert "analyze output" in err and "not rows" in err
    flagged = json.loads((an / "ledger.json").read_text())["ops"]["exact_dedup"]["flagged"]["exact_duplicate"]
    rc, out, _ = show(capsys, str(an), "--dropped", "--op", "exact_dedup", "-n", "3")
    assert rc == 0 and f"showing 3 of {flagged:,} rows the ops would drop by exact_dedup (trace sample)" in out
    assert [h[0] for h in heads(out)] == [r["id"] for r in trace(an, "exact_dedup")[:3]]


def test_plain_output_through_a_pipe_has_no_escape_codes(quick):
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    res = subprocess.run([sys.executable, "-m", "thresher", "show", str(quick), "--dropped", "-n", "3"], cwd=ROOT,
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "(trace sample)" in res.stdout
    assert all(line == line.rstrip() for line in res.stdout.splitlines())


# --------------------------------------------------------------------------- a real terminal
def test_pager_in_a_real_terminal(quick):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install -y tmux): no terminal to run the pager in")
    if shutil.which("less") is None:
        pytest.skip("less is not installed: the pager falls back to pydoc's")
    sock = f"thresher-show-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    cmd = (f"cd {ROOT} && env -u PAGER -u LESS -u FORCE_COLOR TERM=xterm-256color {sys.executable} -m thresher show "
           f"{quick} -n 10; echo SHOW-EXITED-$?; sleep 60")
    first = read_output(quick)[0]["id"]

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "show"], capture_output=True, text=True).stdout

    def wait_for(pred, timeout=30.0) -> str:
        end = time.monotonic() + timeout
        while True:
            s = screen()
            if pred(s) or time.monotonic() > end:
                return s
            time.sleep(0.2)

    subprocess.run([*tmux, "new-session", "-d", "-s", "show", "-x", "100", "-y", "20", cmd], check=True)
    try:
        s = wait_for(lambda s: f"#1 {first}" in s)
        assert "kept rows (data/)" in s and f"#1 {first}" in s, s
        time.sleep(0.5)
        s = screen()
        assert "SHOW-EXITED" not in s, s  # the pager holds the page (10 rows do not fit 20 lines)
        assert "ESC[" not in s and "\x1b" not in s  # styles are drawn, not printed as codes
        styled = subprocess.run([*tmux, "capture-pane", "-p", "-e", "-t", "show"], capture_output=True, text=True).stdout
        assert "\x1b[" in styled  # ... and there are styles (bold header, dim stats)
        subprocess.run([*tmux, "send-keys", "-t", "show", "q"], check=True)
        s = wait_for(lambda s: "SHOW-EXITED" in s, timeout=15)
        assert "SHOW-EXITED-0" in s, s
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
