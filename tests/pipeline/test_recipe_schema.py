"""`thresher schema` checked with a real JSON-Schema validator, as an editor or CI would use it: it
accepts every shipped recipe and every recipe the docs show, and refuses what the loader refuses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")

from thresher.pipeline.docs import recipe_schema  # noqa: E402
from thresher.pipeline.errors import RecipeError  # noqa: E402
from thresher.pipeline.recipe import parse_recipe, shipped_recipes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.fixture(scope="module")
def validator():
    schema = recipe_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, recipe) -> list[str]:
    return [e.message for e in validator.iter_errors(recipe)]


def _yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_every_shipped_recipe_fits_the_schema(validator, name):
    recipe = yaml.safe_load(shipped_recipes()[name].read_text(encoding="utf-8"))
    assert _errors(validator, recipe) == []


def test_recipes_in_the_docs_fit_the_schema(validator):
    recipes = [(p.name, yaml.safe_load(b)) for p in DOCS for b in _yaml_blocks(p) if "\nprocess:" in "\n" + b]
    assert any(name == "README.md" for name, _ in recipes), "README's 'A recipe' block was not found"
    for name, recipe in recipes:
        assert _errors(validator, recipe) == [], name


def test_op_examples_in_the_docs_fit_the_schema(validator):
    """docs/operators.md shows each op's example as a process list."""
    blocks = _yaml_blocks(ROOT / "docs" / "operators.md")
    assert len(blocks) > 40
    for block in blocks:
        recipe = {"input": {"paths": ["in.jsonl"]}, "output": {"path": "out"}, "process": yaml.safe_load(block)}
        assert _errors(validator, recipe) == [], block


BASE = "input: {paths: [in.jsonl]}\noutput: {path: out}\n"


@pytest.mark.parametrize(("text", "valid"), [
    # the loader's shorthands
    ("executor: ray\nprocess: [whitespace_normalize]", True),
    ("input: {paths: in.jsonl}\noutput: {path: out}\nprocess: [{exact_dedup: null}]", True),
    ("process:\n  - text_length_filter: {min_words: 5}\n  - llm_judge: {llm: {temperature: 1}}", True),
    ("policy: {max_quarantine_fraction: 0.5}\nprocess: []", True),
    # what it refuses
    ("process: [{exact_dedupe: {}}]", False),  # unknown op
    ("process: [{text_length_filter: {min_words: true}}]", False),  # wrong parameter types
    ("process: [{text_length_filter: {min_words: '5'}}]", False),
    ("process: [{exact_dedup: {lowercase: 1}}]", False),
    ("process: [{llm_judge: {llm: {max_tokens: true}}}]", False),
    ("process: [{text_length_filter: {min_word: 5}}]", False),  # unknown parameter
    ("process: [select_top]", False),  # a required parameter (column) missing
    ("executor: spark\nprocess: []", False),
    ("process: []\nspeed: fast", False),
])
def test_schema_and_loader_agree(validator, text, valid):
    full = text if text.startswith("input:") else BASE + text
    try:
        parse_recipe(full, "r.yaml")
        loads = True
    except RecipeError:
        loads = False
    assert loads is valid
    assert (_errors(validator, yaml.safe_load(full)) == []) is valid


def test_a_wrong_parameter_is_reported_at_the_parameter(validator):
    """Among the oneOf alternatives (one per op), the validator's best match — what an editor
    underlines — is the wrong parameter of the op the item names, and it says an integer was expected."""
    from jsonschema.exceptions import best_match

    recipe = yaml.safe_load(BASE + "process: [{unicode_normalize: {}}, {text_length_filter: {min_words: true}}]")
    err = best_match(validator.iter_errors(recipe))
    assert list(err.absolute_path) == ["process", 1, "text_length_filter", "min_words"]
    assert "True is not of type 'integer'" in [e.message for e in err.context]


def test_cli_schema_prints_the_schema():
    res = subprocess.run([sys.executable, "-m", "thresher", "schema"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == json.loads(json.dumps(recipe_schema()))


def test_nested_models_of_the_same_name_do_not_clash():
    """Two ops (a plugin's and ours) may each nest a model called ``Config``: the second is renamed,
    and each op's parameters still point at its own."""
    from pydantic import BaseModel

    from thresher.pipeline.docs import _hoist_defs

    class Config(BaseModel):
        n: int

    class Mine(BaseModel):
        config: Config

    class Config(BaseModel):  # noqa: F811 - the same name on purpose
        s: str

    class Theirs(BaseModel):
        config: Config

    defs: dict = {}
    mine, theirs = _hoist_defs(Mine.model_json_schema(), defs, "mine"), _hoist_defs(Theirs.model_json_schema(), defs, "theirs")
    assert set(defs) == {"Config", "theirs.Config"}
    root = {"$defs": defs, "properties": {"mine": mine, "theirs": theirs}}
    v = jsonschema.Draft202012Validator(root)
    assert v.is_valid({"mine": {"config": {"n": 1}}, "theirs": {"config": {"s": "x"}}})
    assert not v.is_valid({"theirs": {"config": {"n": 1}}})
    assert not v.is_valid({"mine": {"config": {"s": "x"}}})
