"""One-line summaries (`thresher ops`, `thresher recipes`, the table in docs/operators.md) are whole
first sentences, never a docstring's first line cut mid-sentence."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from thresher.pipeline.ops import first_sentence
from thresher.pipeline.recipe import shipped_recipes
from thresher.pipeline.registry import all_ops

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = {n: c for n, c in all_ops().items() if c.__module__.startswith("thresher.operators.")}


def _paragraph(text: str) -> str:
    return " ".join(re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0].split())


def assert_whole_sentence(summary: str, text: str) -> None:
    """``summary`` ends with a period, closes every bracket and quote it opens, and is where a
    sentence of ``text``'s first paragraph ends: the paragraph goes on, if at all, with a new one."""
    assert summary.endswith("."), summary
    for a, b in ("()", "[]"):
        assert summary.count(a) == summary.count(b), summary
    assert summary.count("`") % 2 == 0 and summary.count('"') % 2 == 0, summary
    para = _paragraph(text)
    assert para.replace(" ", "").startswith(summary.replace(" ", "")), (summary, para)
    rest = para.replace(" ", "")[len(summary.replace(" ", "")):]
    assert rest == "" or re.match(r"[(\"'`]*[A-Z]", rest), (summary, rest)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_op_summary_is_a_whole_sentence(name):
    cls = BUILTIN[name]
    assert_whole_sentence(cls.summary(), cls.__doc__ or "")


def test_every_shipped_recipe_is_listed_with_a_whole_sentence():
    res = subprocess.run([sys.executable, "-m", "thresher", "recipes"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "COLUMNS": "80"})  # narrower than any line
    assert res.returncode == 0, res.stderr
    lines = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in res.stdout.splitlines() if line.strip()}
    recipes = shipped_recipes()
    assert set(lines) == set(recipes), "one line per recipe, however long its summary"
    for name, path in recipes.items():
        desc = yaml.safe_load(path.read_text(encoding="utf-8"))["description"]
        assert lines[name] == first_sentence(desc)
        assert_whole_sentence(lines[name], desc)


@pytest.mark.parametrize(("text", "sentence"), [
    ("Keep rows (Rae et al. 2021, App. A.1.1).\nMore here.", "Keep rows (Rae et al. 2021, App. A.1.1)."),
    ("A first line that wraps\n    onto the next. Then another.", "A first line that wraps onto the next."),
    ("TRL datasets: DPO (``prompt``/\n``chosen``). Then.", "TRL datasets: DPO (``prompt``/``chosen``)."),
    ("Pick one, e.g. the first. Then.", "Pick one, e.g. the first."),
    ("Done. (A note.)", "Done."),
    ("No final stop\nin this paragraph\n\nNext paragraph.", "No final stop in this paragraph"),
    ("", ""),
])
def test_first_sentence(text, sentence):
    assert first_sentence(text) == sentence
