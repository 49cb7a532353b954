"""Resume: a run killed with SIGKILL mid-way and then resumed gives exactly the output of an
uninterrupted run. Done for real: the CLI in a subprocess, killed by signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import read_output, run_recipe, sample_docs, write_jsonl
from thresher.pipeline.errors import OutputError

ROOT = Path(__file__).resolve().parents[2]
PROCESS = [{"whitespace_normalize": {}}, {"text_length_filter": {"min_words": 3}}, {"exact_dedup": {}},
           {"text_length_filter": {"max_words": 70}}]


def make_inputs(tmp_path, files=40, n=1500):
    docs = sample_docs(files * n, seed=11)
    paths = []
    for i in range(files):
        part = docs[i * n:(i + 1) * n] + [dict(d, id=f"dup{i}-{j}") for j, d in enumerate(docs[i * n:i * n + 50])]
        paths.append(write_jsonl(tmp_path / "in" / f"part{i:02d}.jsonl", part))
    return paths


def write_recipe(tmp_path, out, executor="local") -> Path:
    body = {"input": {"paths": [str(tmp_path / "in")]},
            "output": {"path": str(out), "rows_per_shard": 700},
            "executor": {"type": executor, "workers": 1}, "process": PROCESS}
    p = tmp_path / f"recipe-{out.name}.yaml"
    p.write_text(yaml.safe_dump(body))
    return p


def cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "thresher", *args], cwd=ROOT, **kw)


def data_files(out: Path) -> bytes:
    """The output row stream (Ray writes a file per input block, local mode a file per shard)."""
    return b"".join(f.read_bytes() for f in sorted((out / "data").glob("*")))


def ledger_counts(out: Path) -> dict:
    led = json.loads((out / "ledger.json").read_text())
    return {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in led["ops"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("kill_in_pass,executor", [(0, "local"), (1, "local"), (1, "ray")])
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, kill_in_pass, executor):
    make_inputs(tmp_path)
    clean_out, killed_out = tmp_path / "clean", tmp_path / "killed"
    assert cli("run", str(write_recipe(tmp_path, clean_out)), "-q").wait(timeout=300) == 0

    recipe = write_recipe(tmp_path, killed_out, executor)
    proc = cli("run", str(recipe), "-q")
    pass_dir = killed_out / "_work" / f"pass-{kill_in_pass}"
    if executor == "local":  # shards finish one by one
        where, progress = pass_dir, "done-*.json"
    else:  # Ray marks shards done after a whole pass: kill while the last pass writes its blocks
        where, progress = killed_out / "data", "part-*"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(where.glob(progress))) < 5:
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed; make the input bigger")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the killed output is visibly incomplete
    assert not (killed_out / "_SUCCESS").exists() and not (killed_out / "ledger.json").exists()
    done_before = len(list(pass_dir.glob("done-*.json")))
    assert 5 <= done_before < 40 if executor == "local" else done_before < 40

    # without --resume the unfinished run is not silently replaced
    res = subprocess.run([sys.executable, "-m", "thresher", "run", str(recipe), "-q"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--resume" in res.stderr

    assert cli("run", str(recipe), "-q", "--resume").wait(timeout=300) == 0
    assert (killed_out / "_SUCCESS").exists()
    assert data_files(killed_out) == data_files(clean_out)
    assert ledger_counts(killed_out) == ledger_counts(clean_out)
    rows = read_output(killed_out)
    assert len({r["id"] for r in rows}) == len(rows)  # no duplicated rows


def test_resume_refuses_a_changed_recipe(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", sample_docs(30))
    out = tmp_path / "o"
    out.mkdir()
    from thresher.pipeline.layout import Layout
    from thresher.pipeline.recipe import parse_recipe

    # an interrupted run of another recipe left its manifest
    other = parse_recipe(yaml.safe_dump({"input": {"paths": [str(src)]}, "output": {"path": str(out)},
                                         "process": [{"text_length_filter": {"min_words": 1}}]}))
    Layout(out).work.mkdir()
    Layout(out).manifest.write_text(json.dumps({"recipe": other.fingerprint(), "shards": []}))
    with pytest.raises(OutputError, match="recipe changed"):
        run_recipe([src], out, [{"text_length_filter": {"min_words": 2}}], resume=True)
    res = run_recipe([src], out, [{"text_length_filter": {"min_words": 2}}], overwrite=True)
    assert res.output_rows > 0


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    src = write_jsonl(tmp_path / "a.jsonl", sample_docs(30))
    first = run_recipe([src], tmp_path / "o", [])
    before = data_files(tmp_path / "o")
    again = run_recipe([src], tmp_path / "o", [], resume=True)
    assert again.output_rows == first.output_rows and data_files(tmp_path / "o") == before
