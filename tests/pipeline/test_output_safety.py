"""The output directory never costs a user data: thresher deletes only files it provably wrote,
never an input, never a directory another run is writing; every crash point of the commit is
resumable. Each test is a reproduction from issue 12."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_output, run_recipe, sample_docs, write_jsonl
from thresher.pipeline.errors import OutputError, RunFailed
from thresher.pipeline.outdir import LOCK_NAME, OutputLock

ROOT = Path(__file__).resolve().parents[2]
PROCESS = [{"whitespace_normalize": {}}, {"text_length_filter": {"min_words": 3}}, {"exact_dedup": {}}]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "thresher", *args], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def docs_file(tmp_path, n=200, name="in/docs.jsonl") -> Path:
    return write_jsonl(tmp_path / name, sample_docs(n, seed=3))


# ------------------------------------------------------------------ (a) _SUCCESS proves nothing
def test_spark_output_with_success_marker_is_refused_and_untouched(tmp_path):
    src = docs_file(tmp_path)
    spark = tmp_path / "spark-out"
    (spark / "_SUCCESS").parent.mkdir(parents=True)
    (spark / "_SUCCESS").write_text("")
    (spark / "part-00000-abc.snappy.parquet").write_bytes(b"PAR1 not ours")
    (spark / "notes.txt").write_text("my notes")
    before = snapshot(spark)
    with pytest.raises(OutputError, match="not a thresher output"):
        run_recipe([src], spark, PROCESS)
    assert snapshot(spark) == before


def test_foreign_file_in_a_finished_output_is_never_deleted(tmp_path):
    src = docs_file(tmp_path)
    out = tmp_path / "out"
    run_recipe([src], out, PROCESS)
    (out / "data" / "mine.jsonl").write_text('{"keep": "me"}\n')
    (out / "README.md").write_text("hand-written")
    before = snapshot(out)
    with pytest.raises(OutputError, match="did not write.*README.md.*nothing was deleted"):
        run_recipe([src], out, PROCESS)
    assert snapshot(out) == before
    with pytest.raises(OutputError, match="did not write"):
        run_recipe([src], out, PROCESS, overwrite=True)
    assert snapshot(out) == before


def test_rerun_replaces_only_its_own_files(tmp_path):
    src = docs_file(tmp_path)
    out = tmp_path / "out"
    first = run_recipe([src], out, PROCESS, output={"rows_per_shard": 40})
    assert len(first.files) > 1
    second = run_recipe([src], out, PROCESS)  # one file now: the old parts must be gone
    assert sorted(p.name for p in (out / "data").iterdir()) == [Path(f).name for f in second.files]
    manifest = json.loads((out / "_thresher.json").read_text())
    assert set(manifest["files"]) >= {*second.files, "ledger.json"}
    assert not (out / LOCK_NAME).exists()  # the lock is released when the run ends


# ------------------------------------------------------------------ (b) never an input
def test_output_equal_to_input_is_refused_before_anything_is_touched(tmp_path):
    src = docs_file(tmp_path)
    stage1 = tmp_path / "stage1"
    run_recipe([src], stage1, PROCESS)
    before = snapshot(stage1)
    with pytest.raises(OutputError, match="also an input"):
        run_recipe([stage1], stage1, PROCESS)
    assert snapshot(stage1) == before
    with pytest.raises(OutputError, match="also an input"):  # however it is spelled
        run_recipe([stage1], str(stage1) + "/./", PROCESS)
    assert snapshot(stage1) == before


def test_output_inside_the_input_directory_is_refused(tmp_path):
    docs_file(tmp_path, name="corpus/a.jsonl")
    corpus = tmp_path / "corpus"
    before = snapshot(corpus)
    for _ in range(2):  # the second run would have read the first one's output
        with pytest.raises(OutputError, match="inside the input directory"):
            run_recipe([corpus], corpus / "clean", PROCESS)
    assert snapshot(corpus) == before


def test_output_containing_an_input_is_refused(tmp_path):
    src = docs_file(tmp_path, name="work/in/docs.jsonl")
    before = snapshot(tmp_path / "work")
    with pytest.raises(OutputError, match="contains the input"):
        run_recipe([src], tmp_path / "work", PROCESS)
    with pytest.raises(OutputError, match="contains the input"):
        run_recipe([str(tmp_path / "work" / "in" / "*.jsonl")], tmp_path / "work", PROCESS)
    assert snapshot(tmp_path / "work") == before


def test_output_path_that_is_a_file_is_a_one_line_error(tmp_path):
    src = docs_file(tmp_path)
    target = tmp_path / "out.jsonl"
    target.write_text("precious\n")
    proc = cli("run", "quickstart", "--input", str(src), "--output", str(target), "-q")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "is a file" in lines[0] and "Traceback" not in err.decode()
    assert target.read_text() == "precious\n"


def test_tilde_and_env_vars_are_expanded_in_paths(tmp_path, monkeypatch):
    src = docs_file(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATA_DIR", str(src.parent))
    monkeypatch.chdir(tmp_path)
    result = run_recipe(["$DATA_DIR/docs.jsonl"], "~/curated", PROCESS)
    assert result.out == tmp_path / "home" / "curated"
    assert (tmp_path / "home" / "curated" / "_SUCCESS").exists()
    assert not (tmp_path / "~").exists()


# ------------------------------------------------------------------ (c) one writer at a time
def test_a_locked_output_fails_fast_naming_the_holder(tmp_path):
    src = docs_file(tmp_path)
    out = tmp_path / "out"
    with OutputLock(out).acquire("other-run"):
        t0 = time.monotonic()
        with pytest.raises(OutputError, match=f"another thresher run \\(pid {os.getpid()} on "):
            run_recipe([src], out, PROCESS)
        assert time.monotonic() - t0 < 10
    run_recipe([src], out, PROCESS)  # released: the next run goes ahead
    assert (out / "_SUCCESS").exists()


def test_a_stale_lock_file_is_taken_over(tmp_path):
    src = docs_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    run_recipe([src], out, PROCESS)
    assert (out / "_SUCCESS").exists() and not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_resume_while_another_run_is_writing_is_refused(tmp_path):
    """The reproduction: `--resume` started while a run is active ended with _SUCCESS and fewer rows
    on disk than the ledger counted. Now the second process fails fast and the first finishes whole.
    The first run is held just before its commit (every pass done, nothing committed)."""
    docs_file(tmp_path, n=3000)
    out = tmp_path / "out"
    args = ["run", "quickstart", "--input", str(tmp_path / "in"), "--output", str(out), "-q"]
    first = cli(*args, env={"THRESHER_PAUSE_AT": "before-commit=20"})
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "_work" / "pass-1" / "done-00000.json").exists():
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    for how in (["--resume"], ["--overwrite"], []):
        second = cli(*args, *how)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert "being written by another thresher run" in err.decode() and f"pid {first.pid}" in err.decode()
    assert first.poll() is None  # the refusals were fast: the first run is still holding
    assert first.wait(timeout=300) == 0
    ledger = json.loads((out / "ledger.json").read_text())
    assert len(read_output(out)) == ledger["totals"]["output"] > 0


# ------------------------------------------------------------------ the commit: every crash point resumes
CRASH_POINTS = ["after-trace", "after-ledger", "after-manifest", "after-success"]


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_every_crash_point_of_the_commit_is_resumable(tmp_path, point):
    docs_file(tmp_path, n=400)
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    args = ["run", "quickstart", "--input", str(tmp_path / "in"), "-q"]
    assert cli(*args, "--output", str(clean)).wait(timeout=120) == 0
    proc = cli(*args, "--output", str(crashed), env={"THRESHER_CRASH_AT": point})
    assert proc.wait(timeout=120) == 137
    success = (crashed / "_SUCCESS").exists()
    assert success == (point == "after-success")
    # both ways on are open: --resume finishes it; a plain rerun (or --overwrite) replaces it
    resumed = cli(*args, "--output", str(crashed), "--resume")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()
    assert read_output(crashed) == read_output(clean)
    assert not (crashed / "_work").exists()
    for how in (["--overwrite"], []):
        again = cli(*args, "--output", str(crashed), *how)
        assert again.wait(timeout=120) == 0
        assert read_output(crashed) == read_output(clean)
    led_clean = json.loads((clean / "ledger.json").read_text())
    led = json.loads((crashed / "ledger.json").read_text())
    assert led["totals"] == led_clean["totals"] and led["status"] == "succeeded"


@pytest.mark.slow
def test_sigterm_mid_run_then_resume(tmp_path):
    rows = sample_docs(20000, seed=9)
    for i in range(10):
        write_jsonl(tmp_path / "in" / f"p{i:02d}.jsonl", rows[i * 2000:(i + 1) * 2000])
    out = tmp_path / "out"
    args = ["run", "quickstart", "--input", str(tmp_path / "in"), "--output", str(out), "-q", "--workers", "1"]
    proc = cli(*args)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "_work").glob("pass-0/done-*.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert not (out / "_SUCCESS").exists()
    assert cli(*args, "--resume").wait(timeout=300) == 0
    ledger = json.loads((out / "ledger.json").read_text())
    assert len(read_output(out)) == ledger["totals"]["output"]


# ------------------------------------------------------------------ failure policy
def test_too_much_quarantine_fails_the_run_with_its_ledger(tmp_path):
    good = sample_docs(50, seed=1)
    bad = [{"id": f"b{i}", "body": "no text field"} for i in range(20)]
    src = write_jsonl(tmp_path / "in.jsonl", good + bad)
    out = tmp_path / "out"
    with pytest.raises(RunFailed, match=r"20 of 70 rows \(28.6%\) went to quarantine.*missing or null text field"):
        run_recipe([src], out, PROCESS)
    assert not (out / "_SUCCESS").exists()
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["status"] == "failed" and "quarantine" in ledger["error"]
    assert ledger["ops"]["read"]["quarantined"] == {"missing or null text field": 20}
    # accepting them is a policy change, not a new run: resume finishes it
    result = run_recipe([src], out, PROCESS, resume=True, sets=["policy.max_quarantine_fraction=0.5"])
    assert (out / "_SUCCESS").exists() and result.output_rows == len(read_output(out))


def test_policy_failure_through_the_cli_is_one_line_exit_2(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "txt": "x"} for i in range(10)])
    proc = cli("run", "quickstart", "--input", str(src), "--output", str(tmp_path / "out"), "-q")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert len(err.decode().strip().splitlines()) == 1 and "10 of 10 rows" in err.decode()


def test_global_ops_handle_zero_rows(tmp_path):
    """`--set process.text_length_filter.min_words=100000` was a polars traceback and no ledger."""
    src = docs_file(tmp_path)
    process = [{"text_length_filter": {"min_words": 100000}}, {"exact_dedup": {}},
               {"minhash_dedup": {"threshold": 0.8}}, {"boilerplate_line_remove": {}}, {"span_dedup": {}}]
    result = run_recipe([src], tmp_path / "out", process)
    assert result.output_rows == 0 and (tmp_path / "out" / "_SUCCESS").exists()
    ledger = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["ops"]["text_length_filter"]["dropped"] == {"too_few_words": 200}


def test_quickstart_with_everything_filtered_succeeds_with_zero_rows(tmp_path):
    proc = cli("run", "quickstart", "--set", "process.text_length_filter.min_words=100000",
               "--output", str(tmp_path / "out"), "-q")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert json.loads((tmp_path / "out" / "ledger.json").read_text())["totals"]["output"] == 0


# ------------------------------------------------------------------ user-caused OS errors: one line, exit 2
@pytest.fixture
def tiny_fs(tmp_path):
    """A real 256 KiB tmpfs (needs root, as CI runs; skipped where mounting is not allowed)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_is_a_one_line_error(tmp_path, tiny_fs):
    docs_file(tmp_path, n=6000)
    out = tiny_fs / "out"
    proc = cli("run", "quickstart", "--input", str(tmp_path / "in"), "--output", str(out), "-q")
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == 2, text
    assert len(text.strip().splitlines()) == 1 and "No space left on device" in text and "Traceback" not in text
    assert not (out / "_SUCCESS").exists()
    debug = cli("--debug", "run", "quickstart", "--input", str(tmp_path / "in"), "--output", str(out), "-q",
                "--overwrite")
    _, err = debug.communicate(timeout=120)
    assert debug.returncode != 0 and "Traceback" in err.decode()  # --debug shows where


def test_read_only_output_is_a_one_line_error(tmp_path, tiny_fs):
    src = docs_file(tmp_path)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    proc = cli("run", "quickstart", "--input", str(src), "--output", str(tiny_fs / "out"), "-q")
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == 2 and len(text.strip().splitlines()) == 1, text
    assert "Read-only file system" in text and str(tiny_fs / "out") in text
