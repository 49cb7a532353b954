"""`thresher import-dj`: Data-Juicer configs -> thresher recipes (pipeline/import_dj.py).

The fixtures are Data-Juicer's own shipped text configs (tests/fixtures/data_juicer/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import read_output, write_jsonl
from thresher.pipeline.cli import main
from thresher.pipeline.errors import RecipeError
from thresher.pipeline.import_dj import OPS, UNSUPPORTED, Unmapped, convert, convert_file, convert_op
from thresher.pipeline.recipe import parse_recipe
from thresher.pipeline.registry import all_ops
from thresher.pipeline.run import run

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data_juicer"
CONFIGS = sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.yaml"))
NOTHING_MAPPABLE = {"demo/process_test.yaml"}  # text_entity_dependency_filter (spaCy) only

# the ops issue 15 adds; a target among them that is not registered yet is reported, not a failure

# DJ parameters for each mapped op that exercise the mapping beyond DJ's defaults (every entry of OPS)
EXAMPLES: dict[str, list[dict]] = {
    "alphanumeric_filter": [{"tokenization": False, "min_ratio": 0.7, "max_ratio": 0.9}],
    "average_line_length_filter": [{"min_len": 15, "max_len": 100}, {"max_len": "5e5"}],
    "maximum_line_length_filter": [{"min_len": 50, "max_len": 500}, {"max_len": "1e6"}],
    "character_repetition_filter": [{"rep_len": 10, "min_ratio": 0.05, "max_ratio": 0.3}],
    "word_repetition_filter": [{"lang": "en", "tokenization": True, "rep_len": 5, "max_ratio": 0.19}],
    "flagged_words_filter": [{"lang": "en", "tokenization": True, "max_ratio": 0.0015, "min_ratio": 0.001}],
    "stopwords_filter": [{"lang": "en", "min_ratio": 0.3, "max_ratio": 0.9}, {"lang": "de", "min_ratio": 0.1}],
    "language_id_score_filter": [{"lang": "en", "min_score": 0.8}, {"lang": ["en", "zh"], "min_score": 0.5},
                                 {"lang": "", "min_score": 0.0}],
    "perplexity_filter": [{"lang": "en", "max_ppl": 1500}, {"lang": "zh", "min_ppl": 10, "max_ppl": 7596}],
    "special_characters_filter": [{"min_ratio": 0.15, "max_ratio": 0.35}],
    "text_length_filter": [{"min_len": 30}, {"max_len": "2e5"}],
    "words_num_filter": [{"min_num": 20, "max_num": "1e5", "tokenization": True}],
    "token_num_filter": [{"min_num": 10, "max_num": 4096}],
    "suffix_filter": [{"suffixes": [".py", "Makefile"]}, {"suffixes": ".md"}],
    "specified_field_filter": [{"field_key": "meta.lang", "target_value": ["en", "it's"]}],
    "specified_numeric_field_filter": [{"field_key": "score", "min_value": 0.5, "max_value": 10}],
    "general_field_filter": [{"filter_condition": "10 < num <= 30 and text != 'nothing here' or not flag"}],
    "random_selector": [{"select_ratio": 0.1}, {"select_num": 100, "select_ratio": 0.5}],
    "range_specified_field_selector": [{"field_key": "meta.ppl", "lower_percentile": 0.1, "upper_percentile": 0.9},
                                       {"field_key": "score", "lower_rank": 10, "upper_rank": 100}],
    "frequency_specified_field_selector": [{"field_key": "meta.source", "topk": 10},
                                           {"field_key": "source", "top_ratio": 0.5, "reverse": False}],
    "tags_specified_field_selector": [{"field_key": "meta.tags", "target_tags": ["math", "code"]}],
    "topk_specified_field_selector": [{"field_key": "score", "topk": 10}, {"field_key": "score", "top_ratio": 0.2,
                                                                           "reverse": False}],
    "document_deduplicator": [{"lowercase": True, "ignore_non_character": True}],
    "ray_document_deduplicator": [{}],
    "document_minhash_deduplicator": [{"tokenization": "character", "window_size": 4},
                                      {"num_bands": 16, "num_rows_per_band": 8, "jaccard_threshold": 0.8}],
    "ray_bts_minhash_deduplicator": [{"tokenization": "character", "lowercase": True, "union_find_parallel_num": 2}],
    "ray_bts_minhash_cpp_deduplicator": [{"jaccard_threshold": 0.8, "merge_batch_size": 500}],
    "document_simhash_deduplicator": [{"tokenization": "character", "window_size": 4, "ignore_pattern": r"\p{P}",
                                       "num_blocks": 10, "hamming_distance": 8}],
    "document_line_deduplicator": [{"frequency_threshold": 10, "lowercase": True}],
    "clean_email_mapper": [{}, {"pattern": r"[a-z]+@example\.com", "repl": "<EMAIL>"}],
    "clean_links_mapper": [{}, {"repl": "<LINK>"}],
    "clean_ip_mapper": [{}, {"repl": "<IP>"}],
    "clean_html_mapper": [{}],
    "clean_copyright_mapper": [{}],
    "fix_unicode_mapper": [{}, {"normalization": "nfkc"}],
    "punctuation_normalization_mapper": [{}],
    "whitespace_normalization_mapper": [{}],
    "remove_words_with_incorrect_substrings_mapper": [{}, {"substrings": ["http", "."]}],
    "remove_long_words_mapper": [{"max_len": 25}],
    "remove_specific_chars_mapper": [{}, {"chars_to_remove": ["◆", "●"]}],
    "remove_repeat_sentences_mapper": [{"lowercase": True}],
    "sentence_split_mapper": [{}],
    "text_chunk_mapper": [{"max_len": 2000}, {"max_len": 512, "tokenizer": "Qwen/Qwen2.5-0.5B", "overlap_len": 16}],
    "replace_content_mapper": [{"pattern": r"\[(\d+)\]", "repl": r"(\g<1>)"}, {"pattern": ["a+", "b+"], "repl": ["A", "B"]}],
    "remove_bibliography_mapper": [{}],
    "remove_comments_mapper": [{"doc_type": ["md", "tex"]}],
    "remove_header_mapper": [{"drop_no_head": True}, {"drop_no_head": False}],
    "remove_table_text_mapper": [{"min_col": 2, "max_col": 4}],
    "remove_non_chinese_character_mapper": [{}, {"keep_alphabet": False, "keep_number": False, "keep_punc": False}],
}


def _missing_targets() -> set[str]:
    ops = all_ops()
    return {t for m in OPS.values() for t in m.targets if t not in ops}


# --------------------------------------------------------------------------- the mapping table
def test_every_target_is_registered():
    assert not _missing_targets()


def test_every_mapped_op_has_examples_and_no_op_is_both_mapped_and_unsupported():
    assert set(EXAMPLES) == set(OPS)
    assert not set(OPS) & set(UNSUPPORTED)


@pytest.mark.parametrize("dj_op", sorted(OPS))
def test_mapped_parameters_are_valid_parameters_of_the_target(dj_op):
    """DJ's defaults and the examples convert, and a recipe of the result validates (every mapped
    parameter is one the target accepts, with a value it accepts)."""
    spec = OPS[dj_op]
    steps, converted = [], 0
    for params in [{}] + EXAMPLES[dj_op]:
        try:
            out = convert_op(dj_op, params)
        except Unmapped:
            continue
        converted += 1
        assert {s.op for s in out} <= set(spec.targets)
        steps += out
    assert converted, f"{dj_op}: neither DJ's defaults nor an example converts"
    recipe = parse_recipe(yaml.safe_dump({"input": {"paths": ["x.jsonl"]}, "output": {"path": "out"},
                                          "process": [{s.op: s.params} for s in steps]}), f"{dj_op} (converted)")
    assert [s.name for s in recipe.ops] == [s.op for s in steps]


# --------------------------------------------------------------------------- Data-Juicer's shipped configs
@pytest.mark.parametrize("config", CONFIGS)
def test_shipped_config_converts_to_a_valid_recipe(config):
    if config in NOTHING_MAPPABLE:
        with pytest.raises(RecipeError, match="none of its 1 Data-Juicer ops has a thresher equivalent"):
            convert_file(FIXTURES / config)
        return
    conv = convert_file(FIXTURES / config)
    recipe = parse_recipe(conv.text, config)
    assert len(recipe.ops) == sum(len(r.steps) for r in conv.results) > 0
    for r in conv.unmapped:  # listed in the header and in place
        assert conv.text.count(f"process[{r.index}] {r.dj_op}") >= 2
    raw = yaml.safe_load((FIXTURES / config).read_text())
    if isinstance(raw.get("text_keys"), str):
        assert recipe.input.text_key == raw["text_keys"]


def test_at_least_30_shipped_configs_convert_with_no_unmapped_op():
    full = [c for c in CONFIGS if c not in NOTHING_MAPPABLE and not convert_file(FIXTURES / c).unmapped]
    assert len(CONFIGS) == 37
    assert len(full) >= 30, sorted(set(CONFIGS) - set(full))


def test_redpajama_c4_recipe_reads_as_data_juicer_wrote_it():
    conv = convert_file(FIXTURES / "data_juicer_recipes" / "redpajama-c4-refine.yaml")
    recipe = yaml.safe_load(conv.text)
    ops = [next(iter(e)) for e in recipe["process"]]
    # DJ's own e-mail and link patterns, and its whitespace rule (which keeps runs of spaces), as rewrites
    assert ops[:5] == ["regex_replace", "regex_replace", "mojibake_fix", "punctuation_normalize", "regex_replace"]
    by = {f"{i}:{next(iter(e))}": next(iter(e.values())) for i, e in enumerate(recipe["process"])}
    assert by["5:alphanumeric_filter"] == {"min_ratio": 0.65, "max_ratio": 0.9}
    assert by["6:line_length_filter"] == {"min_avg_line_length": 10.0, "max_avg_line_length": 3000.0,
                                          "min_max_line_length": None, "max_max_line_length": None}
    assert by["9:line_length_filter"] == {"min_avg_line_length": None, "max_avg_line_length": None,
                                          "min_max_line_length": 10, "max_max_line_length": 4000}
    assert by["12:text_length_filter"] == {"min_words": 20, "max_words": 10000}
    assert by["14:simhash_dedup"]["ignore_pattern"] == r"\p{P}"
    assert recipe["executor"] == {"type": "local", "workers": 50}
    assert recipe["output"] == {"path": "/path/to/your/dataset", "format": "jsonl", "trace_samples": 10}
    # a comment names the DJ op and says where thresher counts differently
    assert "# Data-Juicer process[12] words_num_filter {tokenization: true, min_num: 20, max_num: 10000}" in conv.text
    assert "SentencePiece" in conv.text


# --------------------------------------------------------------------------- semantics of single mappings
def _one(dj_op, params=None):
    steps = convert_op(dj_op, params or {})
    assert len(steps) == 1
    return steps[0]


def test_data_juicer_defaults_are_spelled_out_not_thresher_defaults():
    assert _one("text_length_filter").params == {"min_chars": 10, "max_chars": None}
    assert _one("special_characters_filter").params == {"min_ratio": 0.0, "max_ratio": 0.25}
    assert _one("stopwords_filter").params == {"lang": "en", "min_count": None, "min_ratio": 0.3}
    assert _one("document_deduplicator").params == {"lowercase": False, "whitespace": False, "punctuation": False,
                                                    "unicode": False}


def test_numbers_written_as_strings_and_maxsize_bounds():
    assert _one("words_num_filter", {"min_num": "2e1", "max_num": "1e5"}).params == {"min_words": 20, "max_words": 100000}
    assert _one("text_length_filter", {"max_len": sys.maxsize}).params["max_chars"] is None
    assert _one("words_num_filter", {"min_num": 2.5}).params["min_words"] == 3  # the smallest count that passes
    with pytest.raises(Unmapped, match="not a number"):
        convert_op("text_length_filter", {"max_len": "lots"})


def test_tokenized_alphanumeric_ratio_is_not_converted_but_tokenized_words_are_with_a_note():
    with pytest.raises(Unmapped, match="per tokenizer token"):
        convert_op("alphanumeric_filter", {"tokenization": True, "min_ratio": 1.5})
    step = _one("word_repetition_filter", {"tokenization": True})
    assert any("SentencePiece" in n for n in step.notes)


def test_general_field_filter_becomes_sql():
    step = _one("general_field_filter", {"filter_condition": "10 < num <= 30 and text != \"it's\" or not meta.ok"})
    assert step.params == {"condition": """((10 < "num" AND "num" <= 30) AND "text" <> 'it''s') OR NOT ("meta"."ok")"""}
    with pytest.raises(Unmapped, match="not translated"):
        convert_op("general_field_filter", {"filter_condition": "len(text) > 3"})


def test_remove_header_drops_rows_without_one_and_cuts_what_precedes_it():
    steps = convert_op("remove_header_mapper", {})
    assert [s.op for s in steps] == ["regex_filter", "regex_replace"]
    assert [s.op for s in convert_op("remove_header_mapper", {"drop_no_head": False})] == ["regex_replace"]


def test_unknown_parameters_are_noted_and_open_ranges_refused():
    step = _one("character_repetition_filter", {"repetition_ratio": 0.8, "mem_required": "1GB"})
    assert step.notes[0] == "not a Data-Juicer parameter of character_repetition_filter, ignored: repetition_ratio."
    with pytest.raises(Unmapped, match="open or reversed ranges"):
        convert_op("text_length_filter", {"min_len": 5, "reversed_range": True})


def test_an_op_reading_another_text_key_gets_field_or_is_refused():
    assert _one("document_minhash_deduplicator", {"text_key": "content"}).params["field"] == "content"
    with pytest.raises(Unmapped, match="reads the text column only"):
        convert_op("text_length_filter", {"text_key": "content"})
    assert "field" not in _one("text_length_filter", {"text_key": "text"}).params


def test_unsupported_and_unknown_ops_say_why():
    with pytest.raises(Unmapped, match="OpenCC"):
        convert_op("chinese_convert_mapper", {"mode": "s2t"})
    with pytest.raises(Unmapped, match="image, audio or video"):
        convert_op("image_aspect_ratio_filter", {})
    with pytest.raises(Unmapped, match="no built-in flagged-word list for 'zh'"):
        convert_op("flagged_words_filter", {"lang": "zh"})


def test_global_settings():
    conv = convert({"project_name": "p", "dataset_path": "0.5 a.jsonl 0.5 b.jsonl", "export_path": "out/res.parquet",
                    "text_keys": ["content", "title"], "np": 8, "executor_type": "ray", "ray_address": "ray://h:10001",
                    "use_cache": True, "mystery": 1, "process": [{"text_length_filter": {"min_len": 5}}]}, "c.yaml")
    recipe = yaml.safe_load(conv.text)
    assert recipe["name"] == "p"
    assert recipe["input"] == {"paths": ["a.jsonl", "b.jsonl"], "text_key": "content"}
    assert recipe["output"] == {"path": "out/res", "format": "parquet"}
    assert recipe["executor"] == {"type": "ray", "workers": 8, "address": "ray://h:10001"}
    for words in ("weights", "text_keys", "use_cache", "not read: mystery"):
        assert words in conv.text


def test_remote_dataset_gets_a_placeholder_and_a_note():
    conv = convert_file(FIXTURES / "demo" / "process-huggingface.yaml")
    assert yaml.safe_load(conv.text)["input"]["paths"] == ["/path/to/your/dataset.jsonl"]
    assert "hugfaceguy0001/retarded_bar' is not a local file" in conv.text


def test_not_a_config():
    with pytest.raises(RecipeError, match="no 'process' list"):
        convert({"dataset_path": "x"}, "c.yaml")
    with pytest.raises(RecipeError, match=r"process\[0\]: expected"):
        convert({"process": [{"a": {}, "b": {}}]}, "c.yaml")


# --------------------------------------------------------------------------- the command, and a converted recipe run
def test_cli_writes_prints_and_refuses_to_overwrite(tmp_path, capsys):
    config = FIXTURES / "reproduced_redpajama" / "redpajama-code.yaml"
    assert main(["import-dj", str(config)]) == 0
    out, err = capsys.readouterr()
    assert parse_recipe(out, "stdout").ops
    assert "converted 6 of 7 Data-Juicer ops" in err and "not converted: process[5] alphanumeric_filter" in err
    target = tmp_path / "r.yaml"
    assert main(["import-dj", str(config), "-o", str(target)]) == 0
    assert target.read_text() == out
    assert main(["import-dj", str(config), "-o", str(target)]) == 2
    assert "exists; give --force" in capsys.readouterr().err
    assert main(["import-dj", str(config), "-o", str(target), "--force"]) == 0
    assert main(["validate", str(target)]) == 0


def test_cli_nothing_mappable_exits_non_zero_with_the_reasons(capsys):
    assert main(["import-dj", str(FIXTURES / "demo" / "process_test.yaml")]) == 2
    err = capsys.readouterr().err
    assert "none of its 1 Data-Juicer ops" in err and "text_entity_dependency_filter" in err


def test_a_converted_recipe_runs(tmp_path):
    cfg = {"dataset_path": "x", "process": [
        {"clean_email_mapper": None}, {"clean_links_mapper": {"repl": "<LINK>"}},
        {"whitespace_normalization_mapper": None}, {"punctuation_normalization_mapper": None},
        {"remove_words_with_incorrect_substrings_mapper": None}, {"remove_long_words_mapper": {"max_len": 25}},
        {"words_num_filter": {"min_num": 5}}, {"average_line_length_filter": {"min_len": 5}},
        {"character_repetition_filter": {"max_ratio": 0.5}}, {"word_repetition_filter": {"rep_len": 3, "max_ratio": 0.3}},
        {"document_simhash_deduplicator": {"ignore_pattern": r"\p{P}"}}]}
    text = "The river ran past the old mill，and the town library stood on the bridge over the canal in winter."
    rows = [{"id": "a", "text": text}, {"id": "dup", "text": text + "!"}, {"id": "short", "text": "too short"},
            {"id": "rep", "text": "buy now buy now buy now buy now buy now buy now buy now buy now"},
            {"id": "url", "text": "See http://example.com for the river, the town, the mill and the canal today."},
            {"id": "mail", "text": "\u3000Write to ann@example.org or see www.example.org/mill about the river and the town. "}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    conv = convert(cfg, "c.yaml")
    result = run(parse_recipe(conv.text, "c.yaml", inputs=[str(inp)], output=str(tmp_path / "out"), workers=1))
    kept = {r["id"]: r["text"] for r in read_output(result.out)}
    assert set(kept) == {"a", "url", "mail"}
    assert "，" not in kept["a"]
    assert kept["url"] == "See <LINK> for the river, the town, the mill and the canal today."
    # trimmed; the space the address leaves goes when remove_long_words_mapper joins the words again (as in DJ)
    assert kept["mail"] == "Write to or see <LINK> about the river and the town."
