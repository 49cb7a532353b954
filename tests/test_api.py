"""The public API (issue 13): ``thresher.api`` runs one op on a table through the same decisions as a
real run, and runs recipes; ``thresher.testing`` checks ops and runs them in tests."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import read_output, write_jsonl
from tests.conftest import run_recipe as run_in_test
from thresher import api
from thresher.pipeline.errors import RecipeError
from thresher.testing import check_op, run_op

ROWS = [
    {"id": "r0", "text": "the river runs past the old mill"},
    {"id": "r1", "text": "hi"},  # fails too_few_chars and too_few_words: the first rule is recorded
    {"id": "r2", "text": "the river runs past the old mill"},
    {"id": "r3", "text": "a very long document with far too many words in it for the bound"},
    {"id": "r4", "text": "menu home contact\nreal words about a bridge"},
    {"id": "r5", "text": "menu home contact\nanother story of the canal"},
    {"id": "r6", "text": "menu home contact"},
    {"id": "r7", "text": "The River runs past the  old mill"},
]


def test_the_public_module_says_what_is_public():
    assert "internal" in api.__doc__
    assert {"Filter", "Mapper", "GlobalOp", "OpParams", "Resources", "MapResult", "register", "set_column",
            "bounds_masks", "run_recipe", "apply_op"} <= set(api.__all__)
    assert all(hasattr(api, name) for name in api.__all__)


def _real_run(tmp_path, op: str, params: dict) -> tuple[list[str], dict[str, str]]:
    """(kept ids, {dropped id: reason}) of a one-op recipe run for real."""
    out = tmp_path / "out"
    run_in_test([write_jsonl(tmp_path / "in.jsonl", ROWS)], out, [{op: params}], output={"trace_samples": 1000})
    reasons = {}
    for f in (out / "trace").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            reasons[rec["id"]] = rec["reason"]
    return [r["id"] for r in read_output(out)], reasons


@pytest.mark.parametrize("op, params", [
    ("text_length_filter", {"min_chars": 10, "min_words": 3, "max_words": 10}),
    ("exact_dedup", {}),
    ("span_dedup", {"min_chars": 5}),  # a global op whose apply step edits rows and drops the emptied ones
])
def test_apply_op_keeps_and_drops_what_a_run_does(tmp_path, op, params):
    kept, reasons = _real_run(tmp_path, op, params)
    report = api.apply_op_report(op, pa.Table.from_pylist(ROWS), **params)
    assert report.table["id"].to_pylist() == kept
    assert dict(zip(report.dropped["id"].to_pylist(), report.drop_reasons, strict=True)) == reasons
    assert reasons  # each case drops something
    assert report.ledger_entry["rows_in"] == len(ROWS) and report.ledger_entry["rows_out"] == len(kept)
    assert api.apply_op(op, pa.Table.from_pylist(ROWS), **params).equals(report.table)


def test_apply_op_report_of_a_filter_gives_stats_and_the_first_failing_rule():
    report = api.apply_op_report("text_length_filter", ROWS, min_chars=10, min_words=3)
    assert report.dropped["id"].to_pylist() == ["r1"]
    assert report.drop_reasons == ["too_few_chars"]  # "hi" also has too few words: the first rule counts
    assert report.stats["num_words"].to_pylist() == [7, 1, 7, 14, 8, 8, 3, 7]
    assert report.quarantined.num_rows == 0 and report.quarantine_reasons == []


class Split(api.Mapper):
    """Split the text on "|" into rows; empty parts are dropped, parts starting with "!" quarantined."""

    name = "test_split"
    one_to_many = True
    example = {}

    def process(self, batch):
        rows, bad = [], []
        for row in batch.to_pylist():
            for part in row["text"].split("|"):
                rows.append({**row, "text": part})
                bad.append("bang (starts with !)" if part.startswith("!") else None)
        table = pa.Table.from_pylist(rows, schema=batch.schema)
        empty = np.array([not r["text"] for r in rows], dtype=bool)
        return api.MapResult(table, drop={"empty part": empty}, quarantine=bad)


def test_a_mapper_may_create_drop_and_quarantine_rows():
    rows = [{"id": "a", "text": "x|y"}, {"id": "b", "text": "|!z"}]
    report = api.apply_op_report(Split, rows)
    assert report.table.to_pylist() == [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    assert report.dropped.to_pylist() == [{"id": "b", "text": "|!z"}] and report.drop_reasons == ["empty part"]
    assert report.quarantine_reasons == ["bang (starts with !)"]
    assert report.ledger_entry["created"] == 2 and report.ledger_entry["quarantined"] == {"bang": 1}
    with pytest.warns(UserWarning, match="1 of 2 rows went to quarantine"):
        api.apply_op(Split, rows)


class Fragile(api.Filter):
    """Count characters, but fail on rows that say boom."""

    name = "test_fragile"
    stats = {"chars": "characters"}
    example = {}

    def compute_stats(self, batch):
        texts = batch[self.text_key].to_pylist()
        if any("boom" in t for t in texts):
            raise ValueError("boom")
        return {"chars": [len(t) for t in texts]}

    def drop_reasons(self, stats):
        return {"short": np.asarray(stats["chars"]) < 3}


def test_rows_an_op_fails_on_are_isolated_and_quarantined_with_the_error():
    rows = [{"text": "fine text"}, {"text": "boom"}, {"text": "ok"}, {"text": "more fine text"}]
    run = run_op(Fragile, rows)
    assert [r["text"] for r in run.kept] == ["fine text", "more fine text"]
    assert run.dropped == [({"text": "ok"}, "short")]
    assert run.quarantined == [({"text": "boom"}, "ValueError: boom")]
    assert run.stats == {"chars": [9, None, 2, 14]}  # none for the row it could not compute them for
    assert run.ledger_entry["quarantined"] == {"op error: ValueError": 1}


def test_parameters_are_validated_as_in_a_recipe():
    with pytest.raises(RecipeError, match="op 'text_length_filter': parameter 'min_words'"):
        api.apply_op("text_length_filter", ROWS, min_words="3")
    with pytest.raises(RecipeError, match="unknown op 'text_lenght_filter'.*text_length_filter"):
        api.apply_op("text_lenght_filter", ROWS)


def test_run_recipe_takes_a_dict_yaml_text_and_overrides(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    recipe = {"input": {"paths": [data]}, "output": {"path": tmp_path / "out"},
              "process": [{"text_length_filter": {"min_words": 3}}, {"exact_dedup": {}}]}
    run = api.run_recipe(recipe, sets={"process.text_length_filter.max_words": 10})
    assert run.path == tmp_path / "out" and run.data == tmp_path / "out" / "data"
    assert run.ledger["status"] == "succeeded"
    assert run.ledger["ops"]["text_length_filter"]["dropped"] == {"too_few_words": 1, "too_many_words": 1}
    assert run.ledger["ops"]["exact_dedup"]["dropped"] == {"exact_duplicate": 2}
    assert run.rows == 4 == run.read().num_rows
    assert run.read()["id"].to_pylist() == ["r0", "r4", "r5", "r6"]

    text = f"input: {{paths: ['{data}']}}\noutput: {{path: '{tmp_path / 'out2'}', format: parquet}}\nprocess: []\n"
    run = api.run_recipe(text, output=tmp_path / "out3")
    assert run.path == tmp_path / "out3" and run.rows == len(ROWS) == run.read().num_rows


def test_every_builtin_op_keeps_the_op_contract():
    from thresher.pipeline.registry import builtin_ops

    for cls in builtin_ops().values():
        check_op(cls)


def test_check_op_lists_every_problem():
    class Sloppy(api.Filter):
        name = "Sloppy-Op"

        class Params(api.OpParams):
            limit: int = 3

    with pytest.raises(AssertionError) as e:
        check_op(Sloppy)
    msg = str(e.value)
    for problem in ("snake_case", "no docstring", "without a description", "limit", "no example",
                    "documents its stats"):
        assert problem in msg


def test_check_op_with_sample_rows_compares_stats_with_their_docs():
    class Undocumented(Fragile):
        """Document one stat, compute another."""

        name = "test_undocumented"
        stats = {"length": "characters"}

    with pytest.raises(AssertionError, match=r"compute_stats returns \['chars'\] but stats documents \['length'\]"):
        check_op(Undocumented, [{"text": "some text"}])
    check_op(Fragile, [{"text": "some text"}])


def test_run_op_by_name_gives_plain_values():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing quarantined: no warning
        run = run_op("text_length_filter", [{"text": "a b c"}, {"text": "x"}], min_words=2)
    assert run.kept == [{"text": "a b c"}]
    assert run.dropped == [({"text": "x"}, "too_few_words")]
    assert run.stats == {"num_chars": [5, 1], "num_words": [3, 1]}
    assert run.ledger_entry["dropped"] == {"too_few_words": 1}


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the project's own README
    assert scope["run"].rows > 0 and 0 < scope["kept"].num_rows <= scope["run"].rows
    assert (tmp_path / "out" / "qs" / "_SUCCESS").exists()
