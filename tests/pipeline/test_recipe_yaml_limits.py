"""Recipe YAML is read with a bounded loader: an alias bomb is refused before anything is built from
it, with the line it is on; ordinary anchors still work, and a ``--set`` value that is not valid YAML
is a RecipeError.

"At once" is asserted by what happens, not by a clock: the refusal comes before PyYAML constructs a
single Python object from the composed graph, so the expansion never starts (a timed assertion here
failed in CI on a loaded machine; speed belongs in bench/)."""

from __future__ import annotations

import pytest

from thresher.pipeline.errors import RecipeError
from thresher.pipeline.recipe import BoundedLoader, apply_set, load_recipe, parse_recipe

BASE = "input: {paths: [x.jsonl]}\noutput: {path: o}\n"


@pytest.fixture
def constructed(monkeypatch):
    """How many YAML nodes BoundedLoader turned into Python objects during the test."""
    calls = []
    original = BoundedLoader.construct_object

    def counting(self, node, deep=False):
        calls.append(node)
        return original(self, node, deep=deep)

    monkeypatch.setattr(BoundedLoader, "construct_object", counting)
    return calls


def alias_bomb(levels: int, width: int = 9) -> str:
    """The "billion laughs" pattern: each level lists the one before it ``width`` times."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(['"lol"'] * width) + "]"]
    lines += [f"{c}: &{c} [" + ",".join([f"*{p}"] * width) + "]" for p, c in zip(names, names[1:], strict=False)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [9, 11])
def test_alias_bomb_is_refused_at_once(levels, constructed):
    bomb = alias_bomb(levels)
    assert len(bomb.encode()) < 700  # a few hundred bytes that expand to 9**levels strings
    with pytest.raises(RecipeError) as e:
        parse_recipe(bomb + BASE, "recipe.yaml")
    assert constructed == []  # refused on the composed graph, before anything is built
    msg = str(e.value)
    assert msg.startswith("recipe.yaml: line ") and "too many YAML aliases" in msg and "limit" in msg
    assert "\n" not in msg
    line = int(msg.split("line ")[1].split(":")[0])
    assert 2 <= line <= levels  # the level that first expands past the limit, not the top of the file


def test_alias_bomb_from_a_file_names_the_file(tmp_path, constructed):
    f = tmp_path / "bomb.yaml"
    f.write_text(alias_bomb(10) + BASE)
    with pytest.raises(RecipeError, match=r"bomb\.yaml: line \d+: too many YAML aliases"):
        load_recipe(str(f))
    assert constructed == []


def test_recursive_alias_is_refused():
    with pytest.raises(RecipeError, match=r"r\.yaml: line 3: recursive YAML alias"):
        parse_recipe(BASE + "x: &x [1, *x]\n", "r.yaml")


def test_a_recipe_with_a_few_anchors_loads():
    text = """
input: {paths: [x.jsonl], text_key: null}
output: {path: o}
process:
  - chat_format: {source: auto}
  - llm_candidates:
      n: 4
      llm: &llm {base_url: "http://127.0.0.1:8000/v1", model: policy, temperature: 0.8, max_tokens: 512}
  - llm_judge:
      target: candidates
      llm: {<<: *llm, model: judge, temperature: 0.0}
  - llm_judge:
      target: candidates
      llm: *llm
"""
    r = parse_recipe(text, "anchors.yaml")
    llm = [s.params.llm for s in r.ops if s.name in ("llm_candidates", "llm_judge")]
    assert [(c.model, c.temperature, c.max_tokens) for c in llm] == [("policy", 0.8, 512), ("judge", 0.0, 512),
                                                                     ("policy", 0.8, 512)]


def test_a_long_recipe_without_aliases_is_not_limited():
    """The limit is on what aliases add, not on the size of the document."""
    paths = ", ".join(f"part-{i:05d}.jsonl" for i in range(30_000))
    r = parse_recipe(f"input: {{paths: [{paths}]}}\noutput: {{path: o}}\n", "long.yaml")
    assert len(r.input.paths) == 30_000


@pytest.mark.parametrize("assignment, problem", [
    ("process.x=[1,", "not valid YAML"),
    ("output.format={a: 1", "not valid YAML"),
    ("output.path=a: b: c", "not valid YAML"),
    ("output.path=*nope", "undefined alias"),
])
def test_set_with_invalid_yaml_is_a_recipe_error(assignment, problem):
    with pytest.raises(RecipeError) as e:
        parse_recipe(BASE, "t.yaml", [assignment])
    msg = str(e.value)
    assert msg.startswith(f"--set {assignment!r}: value ") and problem in msg


def test_set_value_uses_the_bounded_loader(constructed):
    raw: dict = {}
    apply_set(raw, "x.y={a: &a [1, 2], b: [*a, *a]}", "t.yaml")
    assert raw == {"x": {"y": {"a": [1, 2], "b": [[1, 2], [1, 2]]}}}
    assert constructed  # the counter sees the loader --set uses
    constructed.clear()
    bomb = "{" + alias_bomb(8).replace("\n", ", ").rstrip(", ") + "}"
    with pytest.raises(RecipeError, match=r"^--set 'process=.*: line 1: too many YAML aliases"):
        parse_recipe(BASE, "t.yaml", [f"process={bomb}"])
    assert not [n for n in constructed if n.value == "lol"]  # the bomb's strings were never built
