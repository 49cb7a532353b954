"""Fuzz the output directory rules (issue 12, item 6): hypothesis builds directory layouts — an
earlier thresher run finished, interrupted or absent; foreign files planted beside it, some named
like thresher's own; inputs placed apart, inside the output or around it — then runs a recipe
with --resume, --overwrite or neither. Whatever happens:

- no file thresher did not write is ever deleted or changed (planted files, inputs);
- every exit is a success with ``_SUCCESS`` and a balanced ledger whose row count is on disk, or a
  one-line ThresherError.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import thresher.pipeline.run as run_module
from tests.conftest import read_output, run_recipe, sample_docs, write_jsonl
from thresher.pipeline.errors import ThresherError

PROCESSES = [
    [{"whitespace_normalize": {}}],
    [{"text_length_filter": {"min_words": 5}}, {"exact_dedup": {}}],
    [{"text_length_filter": {"min_words": 100000}}, {"exact_dedup": {}}],  # nothing reaches the global op
    [{"minhash_dedup": {"threshold": 0.7}}, {"text_length_filter": {"max_words": 60}}],
]
DIRS = ["", "data/", "quarantine/", "trace/", "_work/", "sub/deep/", "data/nested/"]
NAMES = ["_SUCCESS", "part-00000-000.jsonl", "part-00042-000.jsonl", "part-00000-000.jsonl.tmp", "notes.txt",
         "ledger.json", "_thresher.json", "pass0-00000.jsonl", "pass0-00077.jsonl", "01-exact_dedup.jsonl",
         ".hidden", "x.parquet", "manifest.json"]

planted = st.lists(st.tuples(st.sampled_from(DIRS), st.sampled_from(NAMES), st.binary(min_size=0, max_size=40)),
                   max_size=6)


class Interrupted(BaseException):
    """Stands for a kill in the middle of the commit (BaseException: nothing catches it)."""


def _interrupt_at_commit(name: str) -> None:
    if name == "before-commit":
        raise Interrupted


def snapshot(files: dict[Path, bytes]) -> dict[Path, bytes | None]:
    return {p: (p.read_bytes() if p.is_file() else None) for p in files}


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          deadline=None)
@given(prior=st.sampled_from(["none", "finished", "interrupted"]), plant=planted,
       where=st.sampled_from(["apart", "input-inside-output", "output-inside-input", "output-is-input"]),
       process=st.sampled_from(range(len(PROCESSES))), prior_process=st.sampled_from(range(len(PROCESSES))),
       flags=st.sampled_from([{}, {"resume": True}, {"overwrite": True}]))
def test_no_foreign_file_is_ever_deleted_and_every_exit_is_clean(tmp_path_factory, monkeypatch, prior, plant, where,
                                                                 process, prior_process, flags):
    root = tmp_path_factory.mktemp("fuzz")
    out = root / "out"
    docs = sample_docs(60, seed=len(plant))
    if where == "input-inside-output":
        src = write_jsonl(out / "incoming" / "docs.jsonl", docs)
        inputs = [src]
    elif where in ("output-inside-input", "output-is-input"):
        src = write_jsonl(root / "corpus" / "docs.jsonl", docs)
        inputs = [root / "corpus"]
        out = root / "corpus" / "out" if where == "output-inside-input" else root / "corpus"
    else:
        src = write_jsonl(root / "in" / "docs.jsonl", docs)
        inputs = [src]
    protected = {src: src.read_bytes()}

    if prior != "none" and where == "apart":
        if prior == "interrupted":
            monkeypatch.setattr(run_module, "crash_point", _interrupt_at_commit)
        try:
            run_recipe(inputs, out, PROCESSES[prior_process])
        except Interrupted:
            pass
        finally:
            monkeypatch.undo()
    for d, name, data in plant:
        if prior == "interrupted" and d == "_work/":
            continue  # _work/ of an unfinished run is thresher's scratch (documented): not a place for user files
        p = out / d / name
        if p.exists() or any(parent.is_file() for parent in p.parents):
            continue  # never overwrite what is there: the oracle must know who wrote every file
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        protected[p] = data

    try:
        result = run_recipe(inputs, out, PROCESSES[process], **flags)
    except ThresherError as e:
        assert "\n" not in str(e), f"not a one-line error: {e}"
    else:
        assert (out / "_SUCCESS").is_file()
        ledger = json.loads((out / "ledger.json").read_text())
        assert ledger["balanced"] and ledger["status"] == "succeeded"
        assert len(read_output(out)) == ledger["totals"]["output"] == result.output_rows
        assert not list(out.rglob("*.tmp"))
    after = snapshot(protected)
    changed = [str(p) for p, data in protected.items() if after[p] != data]
    assert not changed, f"thresher deleted or changed files it did not write: {changed}"


def test_planted_files_in_an_interrupted_run_are_refused_not_deleted(tmp_path, monkeypatch):
    """A fixed example of the property: a foreign file beside an unfinished run's parts."""
    src = write_jsonl(tmp_path / "in.jsonl", sample_docs(50))
    out = tmp_path / "out"
    monkeypatch.setattr(run_module, "crash_point", _interrupt_at_commit)
    with pytest.raises(Interrupted):
        run_recipe([src], out, PROCESSES[1])
    monkeypatch.undo()
    foreign = out / "data" / "part-00042-000.jsonl"
    foreign.write_text("{}\n")  # thresher's name, but not one of its shards
    for how in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(ThresherError, match="did not write.*part-00042-000.jsonl.*nothing was deleted"):
            run_recipe([src], out, PROCESSES[1], **how)
        assert foreign.read_text() == "{}\n"
    foreign.rename(tmp_path / "moved.jsonl")
    result = run_recipe([src], out, PROCESSES[1], resume=True)  # moved away: the run finishes
    assert result.output_rows > 0 and (tmp_path / "moved.jsonl").read_text() == "{}\n"
