"""Recipe loading and validation: messages name the file, op, parameter and a suggestion."""

from __future__ import annotations

import pytest

from thresher.pipeline.errors import InputError, RecipeError
from thresher.pipeline.recipe import find_recipe, load_recipe, parse_recipe, shipped_recipes

BASE = """
input: {paths: ["%s"]}
output: {path: "%s"}
process:
%s
"""


def recipe_text(proc: str, inp: str = "in.jsonl", out: str = "out") -> str:
    return BASE % (inp, out, proc)


def test_valid_recipe_parses_ops_in_order():
    r = parse_recipe(recipe_text("  - unicode_normalize: {form: NFKC}\n  - text_length_filter: {min_words: 3}"), "r.yaml")
    assert [s.name for s in r.ops] == ["unicode_normalize", "text_length_filter"]
    assert r.ops[0].params.form == "NFKC"
    assert r.ops[1].params.min_words == 3
    assert r.executor.type == "local"


def test_unknown_op_names_file_index_and_suggests():
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe_text("  - unicode_normalize: {}\n  - text_lenght_filter: {min_words: 3}"), "my.yaml")
    msg = str(e.value)
    assert "my.yaml" in msg and "process[1]" in msg and "text_lenght_filter" in msg
    assert "Did you mean 'text_length_filter'" in msg


def test_unknown_parameter_suggests_closest():
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe_text("  - text_length_filter: {min_word: 3}"), "my.yaml")
    msg = str(e.value)
    assert "process[0] 'text_length_filter'" in msg
    assert "'min_word'" in msg and "Did you mean 'min_words'" in msg


def test_bad_value_says_what_was_expected():
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe_text("  - text_length_filter: {min_words: lots}"), "my.yaml")
    msg = str(e.value)
    assert "min_words" in msg and "integer" in msg and "'lots'" in msg


@pytest.mark.parametrize(("proc", "param", "expected", "given"), [
    ("text_length_filter: {min_words: true}", "'min_words'", "valid integer", "True, a boolean"),
    ("text_length_filter: {min_words: '5'}", "'min_words'", "valid integer", "'5', a string"),
    ("text_length_filter: {min_words: 5.5}", "'min_words'", "valid integer", "5.5, a number"),
    ("exact_dedup: {lowercase: 1}", "'lowercase'", "valid boolean", "1, an integer"),
    ("exact_dedup: {lowercase: 'yes'}", "'lowercase'", "valid boolean", "'yes', a string"),
    ("language_id: {min_score: '0.5'}", "'min_score'", "valid number", "'0.5', a string"),
    ("llm_judge: {llm: {max_tokens: true}}", "'llm.max_tokens'", "valid integer", "True, a boolean"),
])
def test_parameters_are_not_coerced(proc, param, expected, given):
    """A YAML `true` for a count, a quoted number or `1` for a flag is a mistake to report, not to
    turn into 1, 5 or True; the message names the op, the parameter, the type and what YAML gave."""
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe_text(f"  - {proc}"), "my.yaml")
    msg = str(e.value)
    assert f"'{proc.split(':')[0]}'" in msg and f"parameter {param}" in msg
    assert expected in msg and f"(got {given})" in msg


def test_strict_parameters_take_what_yaml_gives():
    """Strictness refuses only wrong types: an int for a float, lists, Literal strings, nested
    mappings, null for optional fields and integer mapping keys all load."""
    r = parse_recipe(recipe_text(
        "  - language_id: {min_score: 0, languages: [en, de]}\n"
        "  - text_length_filter: {min_words: null, max_words: 100}\n"
        "  - unicode_normalize: {form: NFKC}\n"
        "  - gopher_repetition_filter: {dup_n_grams: {5: 0.15, 6: 0}}\n"
        "  - llm_judge: {llm: {temperature: 1, max_tokens: 64}}"), "my.yaml")
    lid, length, norm, rep, judge = (s.params for s in r.ops)
    assert lid.min_score == 0.0 and isinstance(lid.min_score, float) and lid.languages == ["en", "de"]
    assert length.min_words is None and length.max_words == 100
    assert norm.form == "NFKC"
    assert rep.dup_n_grams == {5: 0.15, 6: 0.0}
    assert judge.llm.temperature == 1.0 and judge.llm.max_tokens == 64


def test_bad_literal_value_lists_choices():
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe_text("  - unicode_normalize: {form: NFX}"), "my.yaml")
    assert "NFKC" in str(e.value)


def test_cross_field_check():
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe_text("  - text_length_filter: {min_words: 10, max_words: 5}"), "my.yaml")
    assert "min_words" in str(e.value) and "max_words" in str(e.value)


def test_top_level_typo_is_reported_with_suggestion():
    text = "input: {paths: [a.jsonl]}\noutput: {path: o}\nproces: []\n"
    with pytest.raises(RecipeError) as e:
        parse_recipe(text, "t.yaml")
    assert "proces" in str(e.value) and "Did you mean 'process'" in str(e.value)


def test_missing_output_path():
    with pytest.raises(RecipeError) as e:
        parse_recipe("input: {paths: [a.jsonl]}\noutput: {format: jsonl}\n", "t.yaml")
    assert "output.path" in str(e.value) and "required" in str(e.value)


def test_yaml_syntax_error_has_line():
    with pytest.raises(RecipeError) as e:
        parse_recipe("input: {paths: [a.jsonl]\noutput: x\n", "t.yaml")
    assert "t.yaml" in str(e.value) and "line" in str(e.value)


def test_python_tags_are_rejected_safe_load():
    text = "input: !!python/object/apply:os.system ['echo pwned']\noutput: {path: o}\n"
    with pytest.raises(RecipeError):
        parse_recipe(text, "evil.yaml")


def test_env_interpolation(monkeypatch):
    monkeypatch.setenv("CORPUS", "/data/corpus.jsonl")
    monkeypatch.delenv("OUTDIR", raising=False)
    r = parse_recipe("input: {paths: ['${CORPUS}']}\noutput: {path: '${OUTDIR:-/tmp/default}'}\n", "t.yaml")
    assert r.input.paths == ["/data/corpus.jsonl"]
    assert r.output.path == "/tmp/default"


def test_env_interpolation_missing_variable_is_named():
    with pytest.raises(RecipeError) as e:
        parse_recipe("input: {paths: ['${NO_SUCH_VAR_X}']}\noutput: {path: o}\n", "t.yaml")
    assert "NO_SUCH_VAR_X" in str(e.value) and "input.paths[0]" in str(e.value)


def test_set_overrides_by_path_index_and_op_name():
    text = recipe_text("  - unicode_normalize: {}\n  - text_length_filter: {min_words: 3}")
    r = parse_recipe(text, "t.yaml", ["output.format=parquet", "process.text_length_filter.min_words=7",
                                       "process.0.unicode_normalize.form=NFKC", "executor.workers=3", "seed=9"])
    assert r.output.format == "parquet"
    assert r.ops[1].params.min_words == 7
    assert r.ops[0].params.form == "NFKC"
    assert r.executor.workers == 3 and r.model.seed == 9


def test_set_inside_executor_shorthand():
    """`executor: ray` is short for {type: ray}; --set executor.X still reaches the mapping."""
    text = recipe_text("  - unicode_normalize: {}") + "executor: ray\n"
    r = parse_recipe(text, "t.yaml", ["executor.model_actors=false", "executor.workers=2"])
    assert r.executor.type == "ray" and r.executor.model_actors is False and r.executor.workers == 2


def test_set_with_bad_value_fails_validation():
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe_text("  - text_length_filter: {}"), "t.yaml", ["process.text_length_filter.min_words=-1"])
    assert "min_words" in str(e.value)


def test_set_unknown_op_name_suggests():
    with pytest.raises(RecipeError) as e:
        parse_recipe(recipe_text("  - text_length_filter: {}"), "t.yaml", ["process.text_length_fliter.min_words=1"])
    assert "text_length_filter" in str(e.value)


def test_cli_overrides_replace_input_output_executor():
    r = parse_recipe(recipe_text("  - unicode_normalize: {}"), "t.yaml", inputs=["x.jsonl", "y.parquet"],
                     output="/tmp/o2", executor="ray", workers=2)
    assert r.input.paths == ["x.jsonl", "y.parquet"]
    assert r.output.path == "/tmp/o2"
    assert r.executor.type == "ray" and r.executor.workers == 2


def test_executor_shorthand_and_input_single_path():
    r = parse_recipe("input: {paths: a.jsonl}\noutput: {path: o}\nexecutor: ray\n", "t.yaml")
    assert r.input.paths == ["a.jsonl"] and r.executor.type == "ray"


def test_shipped_recipes_found_by_name_and_validate():
    shipped = shipped_recipes()
    assert "quickstart" in shipped
    for name in shipped:
        r = load_recipe(name)
        assert r.ops, f"shipped recipe {name} has no ops"


def test_unknown_recipe_name_suggests():
    with pytest.raises(RecipeError) as e:
        find_recipe("quikstart")
    assert "quickstart" in str(e.value)


def test_bad_recipe_fails_before_inputs_are_looked_at(tmp_path):
    # the input does not exist, but the unknown op must be reported first, and nothing is created
    from thresher.pipeline.run import run

    out = tmp_path / "out"
    with pytest.raises(RecipeError):
        r = parse_recipe(recipe_text("  - no_such_op: {}", inp=str(tmp_path / "missing.jsonl"), out=str(out)), "t.yaml")
        run(r)
    assert not out.exists()
    good = parse_recipe(recipe_text("  - unicode_normalize: {}", inp=str(tmp_path / "missing.jsonl"), out=str(out)), "t.yaml")
    with pytest.raises(InputError) as e:
        run(good)
    assert "missing.jsonl" in str(e.value) and "does not exist" in str(e.value)
    assert not out.exists()


def test_fingerprint_ignores_workers_and_output_path_but_not_params():
    a = parse_recipe(recipe_text("  - text_length_filter: {min_words: 3}"), "t.yaml")
    b = parse_recipe(recipe_text("  - text_length_filter: {min_words: 3}", out="elsewhere"), "t.yaml", ["executor.workers=4"])
    c = parse_recipe(recipe_text("  - text_length_filter: {min_words: 4}"), "t.yaml")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_numbers_and_booleans_can_come_from_the_environment(monkeypatch):
    """Op parameters are strict, but a whole ${VAR} is read as YAML for a parameter that is not
    text (the environment only holds strings); text parameters keep the string."""
    monkeypatch.setenv("MIN_WORDS", "7")
    monkeypatch.setenv("LLM_MODEL", "1234")
    body = """
input: {paths: [x.jsonl], text_key: null}
output: {path: o}
process:
  - text_length_filter: {min_words: "${MIN_WORDS}", max_words: "${MAX_WORDS:-900}"}
  - llm_respond: {llm: {model: "${LLM_MODEL}", max_tokens: "${TOKENS:-64}", json_mode: "${JSON:-true}"}}
"""
    r = parse_recipe(body.replace("text_key: null", "text_key: text"))
    tl, llm = r.ops[0].params, r.ops[1].params
    assert (tl.min_words, tl.max_words) == (7, 900)
    assert llm.llm.model == "1234" and llm.llm.max_tokens == 64 and llm.llm.json_mode is True
    with pytest.raises(RecipeError, match="min_words"):  # written in the recipe, a quoted number is still refused
        parse_recipe(body.replace('"${MIN_WORDS}"', '"7"').replace("text_key: null", "text_key: text"))
