"""The registry and the docs and schema generated from typed parameters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from thresher.pipeline.docs import markdown, op_text, recipe_schema
from thresher.pipeline.errors import RecipeError
from thresher.pipeline.ops import Filter, GlobalOp, Mapper, OpParams
from thresher.pipeline.registry import all_ops, builtin_ops, get_op, register

ROOT = Path(__file__).resolve().parents[2]


def test_first_operators_are_registered_with_kinds():
    ops = all_ops()
    assert issubclass(ops["unicode_normalize"], Mapper)
    assert issubclass(ops["whitespace_normalize"], Mapper)
    assert issubclass(ops["text_length_filter"], Filter)
    assert issubclass(ops["exact_dedup"], GlobalOp)


@pytest.mark.parametrize("name", sorted(builtin_ops()))  # thresher's own: a plugin installed here is not ours to test
def test_every_op_is_documented_and_its_example_validates(name):
    cls = builtin_ops()[name]
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
    items = [item for item in schema["properties"]["process"]["items"]["oneOf"] if "properties" in item]
    names = {next(iter(item["properties"])) for item in items if not item.get("deprecated")}
    assert names == set(all_ops())
    former = {next(iter(item["properties"])) for item in items if item.get("deprecated")}  # aliases of renamed ops
    assert former == {old for cls in all_ops().values() for old in cls.aliases}


def test_docs_operators_md_is_up_to_date():
    assert (ROOT / "docs" / "operators.md").read_text(encoding="utf-8") == markdown(), \
        "regenerate with: thresher ops --markdown > docs/operators.md"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thresher", *args], capture_output=True, text=True, cwd=ROOT)


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


# ----------------------------------------------------------------------------- plugins (issue 13)


@pytest.fixture
def own_registry(monkeypatch):
    """This test's registrations and plugin failures are undone afterwards."""
    from thresher.pipeline import registry

    registry.load_all()
    for name in ("_REGISTRY", "_ALIASES", "_PKG_DIST"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(registry, "_SEEN", set(registry._SEEN))
    monkeypatch.setattr(registry, "_FAILURES", list(registry._FAILURES))
    return registry


class NotBuiltIn(Mapper):
    """An op registered from outside thresher's package."""

    name = "not_built_in"
    example = {}

    def process(self, batch):
        return batch


def test_generated_docs_cover_builtin_ops_only(own_registry):
    register(NotBuiltIn)
    assert "not_built_in" in all_ops() and "not_built_in" not in builtin_ops()
    assert "not_built_in" not in markdown()
    text = op_text(NotBuiltIn)
    assert f"defined by: module {__name__} (not from an installed distribution)" in text.splitlines()[1]
    assert op_text(all_ops()["exact_dedup"]).splitlines()[1] == "defined by: thresher (built-in)"


def test_an_entry_point_may_name_a_class_or_a_module(own_registry, tmp_path, monkeypatch):
    (tmp_path / "ep_demo.py").write_text(
        "from thresher.api import Mapper\n\n\n"
        "class Unregistered(Mapper):\n"
        "    \"\"\"Registered by its entry point.\"\"\"\n\n"
        "    name = 'ep_demo_op'\n\n"
        "    def process(self, batch):\n"
        "        return batch\n\n\n"
        "NOT_AN_OP = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ep_demo", raising=False)
    own_registry._load_plugin("ep_demo:Unregistered")
    own_registry._load_plugin("ep_demo:Unregistered")  # loading twice is harmless
    assert all_ops()["ep_demo_op"].__module__ == "ep_demo"
    with pytest.raises(TypeError, match="not an op class"):
        own_registry._load_plugin("ep_demo:NOT_AN_OP")


def test_an_unknown_op_names_the_plugin_that_failed(own_registry):
    from thresher.pipeline.recipe import parse_recipe

    failure = own_registry.PluginFailure("acme", "acme_ops", "acme-ops", "ModuleNotFoundError: No module named 'x'")
    own_registry._FAILURES.append(failure)
    assert failure.message() == ("plugin 'acme' (from distribution acme-ops) could not be loaded: "
                                 "ModuleNotFoundError: No module named 'x'")
    with pytest.raises(RecipeError) as e:
        get_op("acme_filter")
    assert "unknown op 'acme_filter'" in str(e.value) and failure.message() in str(e.value)
    with pytest.raises(RecipeError, match="plugin 'acme' .*ModuleNotFoundError"):
        parse_recipe("input: {paths: [x.jsonl]}\noutput: {path: out}\nprocess: [acme_filter]\n")
    assert get_op("exact_dedup").name == "exact_dedup"  # the ops that loaded still work
