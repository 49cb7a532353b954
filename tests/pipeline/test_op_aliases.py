"""Renamed ops keep their former names as deprecated aliases: a recipe that uses every old name
still validates (with a note per renamed op) and runs, under the new names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.pipeline.recipe import parse_recipe
from thresher.pipeline.registry import all_ops, resolve_alias

ROOT = Path(__file__).resolve().parents[2]

RENAMED = {  # old name -> new name (noun first, then the action)
    "fix_mojibake": "mojibake_fix",
    "remove_urls_emails": "url_email_remove",
    "decontaminate": "decontamination_filter",
    "group_candidates": "candidates_group",
    "select_top": "top_select",
    "select_diverse": "diverse_select",
}


def _rows() -> list[dict]:
    rows = []
    for p in range(4):
        for j, score in enumerate([3.0, 8.0]):
            rows.append({"id": f"p{p}-{j}", "text": f"prompt {p} answer {j}, see https://example.org/{p} Ã©tÃ©",
                         "score": score + p,
                         "messages": [{"role": "user", "content": f"what is number {p} about"},
                                      {"role": "assistant", "content": f"answer {p}.{j}"}]})
    rows.append({"id": "leak", "text": "leak", "score": 1.0,
                 "messages": [{"role": "user", "content": "the secret benchmark question about apples and pears"},
                              {"role": "assistant", "content": "an answer"}]})
    return rows


def _process(evalset: Path) -> list[dict]:
    return [
        {"fix_mojibake": {}},
        {"remove_urls_emails": {}},
        {"decontaminate": {"path": str(evalset), "field": "question", "ngram": 4}},
        {"group_candidates": {}},
        {"select_top": {"column": "score", "k": 3}},
        {"select_diverse": {"k": 2, "field": "text"}},
    ]


def test_every_alias_is_listed_here():
    aliases = {old: cls.name for cls in all_ops().values() for old in cls.aliases}
    assert aliases == RENAMED
    for old, new in RENAMED.items():
        assert resolve_alias(old)[0] == new and old not in all_ops()


def test_recipe_with_every_old_name_validates_and_runs(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", _rows())
    evalset = write_jsonl(tmp_path / "eval.jsonl", [{"question": "the secret benchmark question about apples"}])
    process = _process(evalset)

    recipe_file = tmp_path / "old-names.yaml"
    recipe_file.write_text(yaml.safe_dump({"input": {"paths": [str(src)]}, "output": {"path": str(tmp_path / "v")},
                                           "process": process}))
    res = subprocess.run([sys.executable, "-m", "thresher", "validate", str(recipe_file)], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    notes = " ".join(res.stderr.split())  # the terminal may wrap them
    assert notes.count("note: ") == len(RENAMED)
    for old, new in RENAMED.items():
        assert f"op '{old}' is now called '{new}'; the old name still works but is deprecated" in notes

    recipe = parse_recipe(yaml.safe_dump({"input": {"paths": [str(src)]}, "output": {"path": "x"}, "process": process}))
    assert [op.name for op in recipe.ops] == list(RENAMED.values())
    assert len(recipe.notes) == len(RENAMED)

    result = run_recipe([src], tmp_path / "out", process)
    led = result.ledger
    assert list(led.entries)[1:] == list(RENAMED.values())
    assert led["decontamination_filter"].dropped == {"overlaps_eval_set": 1}
    assert led["candidates_group"].dropped == {"merged_into_prompt_row": 4}
    assert led["top_select"].dropped == {"not_in_top": 1}
    assert led["diverse_select"].dropped == {"not_most_diverse": 1}
    out = read_output(tmp_path / "out")
    assert len(out) == 2 and all("https://" not in r["text"] and "Ã" not in r["text"] for r in out)
