"""``_work/`` holds about one generation of rows: a pass's rows of a shard are removed once the next
pass has finished that shard, and a global op's fingerprints once it has decided — and a run killed
after that still resumes to the same output."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.conftest import read_output, sample_docs, write_jsonl
from thresher.pipeline.faults import ENV as CRASH_ENV
from thresher.pipeline.faults import EXIT_CODE

PROCESS = [{"text_length_filter": {"min_words": 3}}, {"exact_dedup": {}},
           {"minhash_dedup": {"threshold": 0.8, "num_perm": 64}}, {"text_length_filter": {"max_words": 70}}]


def _recipe(tmp_path, out):
    docs = sample_docs(3000, seed=3)
    docs += [dict(d, id=f"copy{i}") for i, d in enumerate(docs[:200])]
    paths = [str(write_jsonl(tmp_path / "in" / f"p{i}.jsonl", docs[i::5])) for i in range(5)]
    body = {"input": {"paths": paths}, "output": {"path": str(out)}, "executor": {"type": "local", "workers": 2},
            "seed": 1, "process": PROCESS}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _run(recipe, *args, env=None):
    return subprocess.run([sys.executable, "-m", "thresher", "run", str(recipe), "-q", *args],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600)


def test_consumed_rows_and_fingerprints_leave_work_and_resume_still_works(tmp_path):
    whole = _run(_recipe(tmp_path, tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    recipe = _recipe(tmp_path, tmp_path / "killed")
    killed = _run(recipe, env={CRASH_ENV: "before-commit"})
    assert killed.returncode == EXIT_CODE, killed.stderr
    work = tmp_path / "killed" / "_work"
    passes = sorted(p.name for p in work.glob("pass-*"))
    assert passes == ["pass-0", "pass-1", "pass-2"]
    for k in (0, 1):  # every shard of pass k+1 is done: pass k's rows and fingerprints are gone
        assert not list((work / f"pass-{k}").glob("rows-*")), k
        assert not list((work / f"pass-{k}").glob("fp-*")), k
        assert len(list((work / f"pass-{k}").glob("done-*.json"))) == 5
    resumed = _run(recipe, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert read_output(tmp_path / "killed") == read_output(tmp_path / "whole") != []
