"""The registry and the docs and schema generated from typed parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.docs import markdown, op_text, recipe_schema
from pipeline.errors import RecipeError
from pipeline.ops import Filter, GlobalOp, Mapper, OpParams
from pipeline.registry import all_ops, get_op, register

ROOT = Path(__file__).resolve().parents[2]


def test_first_operators_are_registered_with_kinds():
    ops = all_ops()
    assert issubclass(ops["unicode_normalize"], Mapper)
    assert issubclass(ops["whitespace_normalize"], Mapper)
    assert issubclass(ops["text_length_filter"], Filter)
    assert issubclass(ops["exact_dedup"], GlobalOp)


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_every_op_is_documented_and_its_example_validates(name):
    cls = all_ops()[name]
    assert cls.summary(), f"{name} needs a one-line docstring summary"
    assert issubclass(cls.Params, OpParams)
    cls.Params.model_validate(cls.example or {})  # the documented example is a valid config
    for field in cls.Params.model_fields.values():
        assert field.description, f"{name}: parameter without description"


def test_get_unknown_op_suggests():
    with pytest.raises(RecipeError) as e:
        get_op("exact_dedupe")
    assert "exact_dedup" in str(e.value)


def test_name_clash_is_refused():
    class Impostor(Mapper):
        """Takes a name that is already used."""

        name = "unicode_normalize"

    with pytest.raises(TypeError):
        register(Impostor)


def test_op_text_shows_params_defaults_stats_and_example():
    text = op_text(all_ops()["text_length_filter"])
    assert "min_words" in text and "= None" in text
    assert "num_words" in text  # a stat it writes
    assert "example:" in text and "text_length_filter:" in text


def test_schema_has_every_op():
    schema = recipe_schema()
    names = {next(iter(item["properties"])) for item in schema["properties"]["process"]["items"]["oneOf"]}
    assert names == set(all_ops())


def test_docs_operators_md_is_up_to_date():
    assert (ROOT / "docs" / "operators.md").read_text(encoding="utf-8") == markdown(), \
        "regenerate with: thresher ops --markdown > docs/operators.md"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_ops_lists_every_op_with_summary():
    res = _cli("ops")
    assert res.returncode == 0, res.stderr
    for name, cls in all_ops().items():
        line = next(x for x in res.stdout.splitlines() if x.startswith(name + " "))
        assert cls.summary()[:30] in line


def test_cli_ops_name_and_unknown():
    res = _cli("ops", "exact_dedup")
    assert res.returncode == 0 and "lowercase" in res.stdout and "punctuation" in res.stdout
    res = _cli("ops", "exact_dedupp")
    assert res.returncode == 2 and "exact_dedup" in res.stderr
