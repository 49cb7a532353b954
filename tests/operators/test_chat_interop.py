"""Issue 15 (formats): thresher reads back what it writes and what TRL writes, pairwise judgements
become pairs, field-mapped QA rows become conversations, user columns carried through (unknown
names are errors), candidates grouped by a key, one plain prompt rendering. CSV/TSV input:
tests/pipeline/test_csv_input.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ACCEPT_BAD_ROWS, read_output, read_quarantine, run_recipe, write_jsonl
from thresher.operators.common.chat import parse_plain_prompt, render_plain, to_trl
from thresher.pipeline.errors import RecipeError, ThresherError

CHAT = {"text_key": None}


def U(text):  # noqa: N802 - reads like a constructor
    return {"role": "user", "content": text}


def A(text):  # noqa: N802
    return {"role": "assistant", "content": text}


def S(text):  # noqa: N802
    return {"role": "system", "content": text}


def _by_id(rows):
    """Rows by id, without null fields (a column only other rows of a file have)."""
    return {r["id"]: {k: v for k, v in r.items() if v is not None} for r in rows}


# ---------------------------------------------------------------------------------- 1. read back
def test_shipped_recipe_outputs_read_back_unchanged(tmp_path):
    """sft-clean and dpo-from-ranked write TRL SFT and conversational DPO; chat_format reads both
    back with nothing quarantined, and exporting again gives the same rows. The plain DPO export
    reads back to the same conversations too."""
    from thresher.pipeline.recipe import load_recipe
    from thresher.pipeline.run import run

    for recipe, to in (("sft-clean", "sft"), ("dpo-from-ranked", "dpo")):
        first = tmp_path / recipe
        run(load_recipe(recipe, output=str(first)))
        original = _by_id(read_output(first))
        assert original
        again = tmp_path / f"{recipe}-again"
        res = run_recipe([first], again, [{"chat_format": {}}, {"chat_export": {"to": to}}], input=CHAT)
        assert not read_quarantine(again) and sum(res.ledger["chat_format"].quarantined.values()) == 0
        assert _by_id(read_output(again)) == original

    pairs = tmp_path / "dpo-from-ranked"
    plain = tmp_path / "plain"
    run_recipe([pairs], plain, [{"chat_format": {}}, {"chat_export": {"to": "dpo", "style": "plain"}}], input=CHAT)
    text_rows = read_output(plain)
    assert all(r["prompt"].endswith("\n\nAssistant:") and r["chosen"].startswith(" ") for r in text_rows)
    back = tmp_path / "plain-back"
    run_recipe([plain], back, [{"chat_format": {}}, {"chat_export": {"to": "dpo"}}], input=CHAT)
    assert not read_quarantine(back)
    assert _by_id(read_output(back)) == _by_id(read_output(pairs))


def test_canonical_and_intermediate_rows_read_back(tmp_path):
    """What chat_format, preference_pairs and a KTO export write is read again as the same
    conversations: canonical DPO, KTO and candidate rows, conversational and plain KTO exports,
    with a system message and several turns."""
    convo = [S("Be brief."), U("hi"), A("hello"), U("what is 2+2?")]
    rows = [
        {"id": "kto-good", "messages": convo + [A("4")], "label": True},
        {"id": "kto-bad", "messages": convo + [A("5")], "label": False},
        {"id": "ranked", "instruction": "Name a colour", "output": ["red", "blue", "green"]},
    ]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    canon = tmp_path / "canon"
    run_recipe([src], canon, [{"chat_format": {}}], input=CHAT)
    canonical = _by_id(read_output(canon))
    assert canonical["kto-good"]["messages"] == convo and canonical["kto-good"]["completion"] == [A("4")]
    assert [c["content"] for c in canonical["ranked"]["candidates"]] == ["red", "blue", "green"]

    again = tmp_path / "canon-again"  # canonical rows are a format chat_format reads
    run_recipe([canon], again, [{"chat_format": {}}], input=CHAT)
    assert not read_quarantine(again) and _by_id(read_output(again)) == canonical

    pairs = tmp_path / "pairs"  # preference_pairs' output (canonical DPO + scores) reads back too
    run_recipe([canon], pairs, [{"chat_format": {}}, {"preference_pairs": {"strategy": "all_pairs"}}], input=CHAT)
    made = _by_id(read_output(pairs))
    assert len(made) == 3
    pairs_again = tmp_path / "pairs-again"
    run_recipe([pairs], pairs_again, [{"chat_format": {}}], input=CHAT)
    assert not read_quarantine(pairs_again) and _by_id(read_output(pairs_again)) == made

    for style in ("conversational", "plain"):
        out = tmp_path / f"kto-{style}"
        run_recipe([canon], out, [{"chat_format": {}}, {"chat_export": {"to": "kto", "style": style}}],
                   input=CHAT, policy=ACCEPT_BAD_ROWS)  # the ranked row is no KTO row: quarantined
        back = tmp_path / f"kto-{style}-back"
        run_recipe([out], back, [{"chat_format": {}}], input=CHAT)
        assert not read_quarantine(back)
        got = _by_id(read_output(back))
        for rid in ("kto-good", "kto-bad"):
            assert {k: got[rid][k] for k in ("messages", "completion", "label")} == \
                   {k: canonical[rid][k] for k in ("messages", "completion", "label")}


def test_trl_dataset_types_are_read(tmp_path):
    """TRL's documented examples, plain and conversational: preference (explicit and implicit
    prompt), prompt-completion, unpaired preference (KTO) and prompt-only."""
    sky = [U("The sky is")]
    rows = [
        {"id": "pref-plain", "prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
        {"id": "pref-conv", "prompt": sky, "chosen": [A("It is blue.")], "rejected": [A("It is green.")]},
        {"id": "implicit", "chosen": sky + [A("It is blue.")], "rejected": sky + [A("It is green.")]},
        {"id": "sft-plain", "prompt": "The sky is", "completion": " blue."},
        {"id": "sft-conv", "prompt": sky, "completion": [A("It is blue.")]},
        {"id": "kto-plain", "prompt": "The sky is", "completion": " green.", "label": False},
        {"id": "kto-conv", "prompt": sky, "completion": [A("It is blue.")], "label": True},
        {"id": "prompt-only", "prompt": "The sky is"},
    ]
    # one file per shape: TRL datasets hold one type, and a column's type is fixed within a file
    paths = [write_jsonl(tmp_path / f"{r['id']}.jsonl", [r]) for r in rows]
    res = run_recipe(paths, tmp_path / "out", [{"chat_format": {}}], input=CHAT)
    assert not read_quarantine(tmp_path / "out") and sum(res.ledger["chat_format"].quarantined.values()) == 0
    got = _by_id(read_output(tmp_path / "out"))
    for rid in ("pref-plain", "implicit"):
        assert got[rid]["messages"] == sky and got[rid]["chosen"] == [A("blue." if rid == "pref-plain" else "It is blue.")]
    assert got["pref-conv"]["rejected"] == [A("It is green.")]
    assert got["sft-plain"]["messages"] == sky + [A("blue.")] and got["sft-conv"]["messages"] == sky + [A("It is blue.")]
    assert got["kto-plain"]["completion"] == [A("green.")] and got["kto-plain"]["label"] is False
    assert got["kto-conv"]["label"] is True
    assert got["prompt-only"]["messages"] == sky
    assert all("prompt" not in r for r in got.values())  # consumed: the canonical columns replace it
    assert {rid for rid, r in got.items() if "completion" in r} == {"kto-plain", "kto-conv"}


# ---------------------------------------------------------------------------------- 7. plain rendering
def test_plain_prompts_are_rendered_one_way():
    one = [U("q")]
    many = [S("sys"), U("q1"), A("a1"), U("q2")]
    assert render_plain(one) == "\n\nHuman: q\n\nAssistant:"
    assert render_plain(many) == "sys\n\nHuman: q1\n\nAssistant: a1\n\nHuman: q2\n\nAssistant:"
    for m in (one, many):
        assert parse_plain_prompt(render_plain(m)) == m
        row = to_trl({"messages": m, "chosen": [A("yes")], "rejected": [A("no")]}, "dpo", "plain")
        assert row["chosen"] == " yes"  # prompt + chosen is the whole transcript
        assert (row["prompt"] + row["chosen"]).endswith("\n\nAssistant: yes")


# ---------------------------------------------------------------------------------- 2. pairwise
def _pandalm_rows():
    base = {"motivation_app": "Grammarly", "instruction": "Rewrite the sentence more concisely.",
            "input": "If you have any questions about my rate, please let me know."}
    return [
        {**base, "idx": 0, "cmp_key": "a_b", "response1": "Questions? Let me know.", "response2": "Please.",
         "annotator1": 1, "annotator2": 1, "annotator3": 2},
        {**base, "idx": 1, "cmp_key": "a_c", "response1": "Questions? Let me know.", "response2": "Any questions, ask.",
         "annotator1": 2, "annotator2": 2, "annotator3": 2},
        {**base, "idx": 2, "cmp_key": "b_c", "response1": "Please.", "response2": "Any questions, ask.",
         "annotator1": 0, "annotator2": 0, "annotator3": 1},  # a tie
        {**base, "idx": 3, "cmp_key": "c_d", "response1": "Ask me.", "response2": "Ping me.",
         "annotator1": 0, "annotator2": 1, "annotator3": 2},  # no majority
        {**base, "idx": 4, "cmp_key": "d_e", "input": "", "instruction": "Say hi.", "response1": "Hi", "response2": "Hi",
         "annotator1": 1, "annotator2": 1, "annotator3": 1},  # identical answers
        {**base, "idx": 5, "cmp_key": "e_f", "response1": "x", "response2": "y",
         "annotator1": 3, "annotator2": 3, "annotator3": 3},  # not a label PandaLM uses
    ]


PANDALM = {"prompt_field": ["instruction", "input"], "response_fields": ["response1", "response2"],
           "label_field": ["annotator1", "annotator2", "annotator3"], "first_label": 1, "second_label": 2,
           "tie_labels": [0]}


def test_pandalm_test_set_shape_into_pairs(tmp_path):
    src = tmp_path / "testset-v1.json"  # PandaLM ships a JSON array
    src.write_text(json.dumps(_pandalm_rows(), indent=4), encoding="utf-8")
    res = run_recipe([src], tmp_path / "out", [{"pairwise_to_pairs": PANDALM},
                                               {"chat_export": {"to": "dpo", "keep_columns": ["id", "cmp_key"]}}],
                     input=CHAT, policy=ACCEPT_BAD_ROWS)
    out = {r["cmp_key"]: r for r in read_output(tmp_path / "out")}
    assert set(out) == {"a_b", "a_c"}
    prompt = [U("Rewrite the sentence more concisely.\nIf you have any questions about my rate, please let me know.")]
    assert out["a_b"]["prompt"] == prompt
    assert out["a_b"]["chosen"] == [A("Questions? Let me know.")] and out["a_b"]["rejected"] == [A("Please.")]
    assert out["a_c"]["chosen"] == [A("Any questions, ask.")]  # response2 won
    led = res.ledger["pairwise_to_pairs"]
    assert led.dropped == {"tie": 1, "no_majority_label": 1, "identical_responses": 1}
    assert led.quarantined == {"unknown label": 1}
    (bad,) = read_quarantine(tmp_path / "out")
    assert "annotator1: 3" in bad["reason"] and bad["source"] == "testset-v1.json" and bad["line"] == 6

    res = run_recipe([src], tmp_path / "ties", [{"pairwise_to_pairs": {**PANDALM, "keep_ties": True}}],
                     input=CHAT, policy=ACCEPT_BAD_ROWS)
    kept = {r["cmp_key"]: r for r in read_output(tmp_path / "ties")}
    assert kept["b_c"]["margin"] == 0.0 and kept["b_c"]["chosen"] == [A("Please.")]
    assert kept["b_c"]["motivation_app"] == "Grammarly"  # other columns carried through
    assert "response1" not in kept["b_c"] and "annotator1" not in kept["b_c"]  # the fields it read are consumed
    assert res.ledger["pairwise_to_pairs"].counters["ties_kept"] == 1


def test_autoj_pairwise_and_scores(tmp_path):
    rows = [{"scenario": "seeking_advice", "label": 0, "prompt": "How do I find a job after college?",
             "response 1": "Network, apply widely, practise interviews.", "response 2": "I am a program."},
            {"scenario": "chitchat", "label": 1, "prompt": "Hi!", "response 1": "...", "response 2": "Hello! How are you?"},
            {"scenario": "chitchat", "label": 2, "prompt": "Hey", "response 1": "Hey!", "response 2": "Hello!"}]
    src = write_jsonl(tmp_path / "testdata_pairwise.jsonl", rows)
    autoj = {"response_fields": ["response 1", "response 2"], "first_label": 0, "second_label": 1, "tie_labels": [2]}
    res = run_recipe([src], tmp_path / "out", [{"pairwise_to_pairs": autoj}], input=CHAT)
    out = read_output(tmp_path / "out")
    assert [(r["scenario"], r["chosen"][0]["content"]) for r in out] == [
        ("seeking_advice", "Network, apply widely, practise interviews."), ("chitchat", "Hello! How are you?")]
    assert res.ledger["pairwise_to_pairs"].dropped == {"tie": 1}

    scored = [{"id": "s1", "prompt": "q1", "a": "good", "b": "bad", "sa": 8.5, "sb": 3},
              {"id": "s2", "prompt": "q2", "a": "meh", "b": "fine", "sa": 5, "sb": 5.5},
              {"id": "s3", "prompt": "q3", "a": "x", "b": "y", "sa": 4, "sb": 4}]
    src = write_jsonl(tmp_path / "scored.jsonl", scored)
    res = run_recipe([src], tmp_path / "scored", [{"pairwise_to_pairs": {
        "response_fields": ["a", "b"], "score_fields": ["sa", "sb"], "min_margin": 1.0}}], input=CHAT)
    (row,) = read_output(tmp_path / "scored")
    assert row["id"] == "s1" and row["chosen_score"] == 8.5 and row["rejected_score"] == 3.0 and row["margin"] == 5.5
    assert res.ledger["pairwise_to_pairs"].dropped == {"below_margin": 1, "tie": 1}

    as_csv = tmp_path / "pairwise.csv"  # labels read from CSV are text: "0" is the label 0
    as_csv.write_text('prompt,response 1,response 2,label\n"Hi, there",Hello!,...,0\nHey,Yo,"Hey, you",2\n',
                      encoding="utf-8")
    res = run_recipe([as_csv], tmp_path / "csv", [{"pairwise_to_pairs": autoj}], input=CHAT)
    (row,) = read_output(tmp_path / "csv")
    assert row["messages"] == [U("Hi, there")] and row["chosen"] == [A("Hello!")] and row["id"] == "pairwise.csv:2"
    assert res.ledger["pairwise_to_pairs"].dropped == {"tie": 1}

    with pytest.raises(RecipeError, match="must all differ"):
        run_recipe([src], tmp_path / "bad", [{"pairwise_to_pairs": {"first_label": 1, "tie_labels": [1]}}], input=CHAT)


# ---------------------------------------------------------------------------------- 3. field mapping
def test_question_answer_rows_by_field_mapping(tmp_path):
    rows = [{"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
             "answer": "48 / 2 = 24 in May.\n48 + 24 = 72\n#### 72", "persona": "You are a maths tutor."},
            {"question": "2+2?", "answer": "4", "persona": None}]
    src = write_jsonl(tmp_path / "gsm8k.jsonl", rows)
    run_recipe([src], tmp_path / "out", [{"chat_format": {"prompt_field": "question", "response_field": "answer",
                                                          "system_field": "persona"}}], input=CHAT)
    first, second = read_output(tmp_path / "out")
    assert first["messages"] == [S("You are a maths tutor."), U(rows[0]["question"]), A(rows[0]["answer"])]
    assert second["messages"] == [U("2+2?"), A("4")]  # no system message where the field is empty
    assert not {"question", "answer", "persona"} & set(first)
    with pytest.raises(RecipeError, match="source: fields"):
        run_recipe([src], tmp_path / "o2", [{"chat_format": {"source": "openai", "prompt_field": "question"}}], input=CHAT)


# ---------------------------------------------------------------------------------- 5. columns
def test_user_columns_are_carried_and_unknown_names_are_errors(tmp_path):
    rows = [{"id": "p1", "messages": [U("q")], "source": "forum", "lang": "en",
             "candidates": [{"content": "good", "rank": None, "score": 9.0},
                            {"content": "bad", "rank": None, "score": 1.0},
                            {"content": "ok", "rank": None, "score": 5.0}]}]
    src = write_jsonl(tmp_path / "c.jsonl", rows)
    run_recipe([src], tmp_path / "all", [{"preference_pairs": {"strategy": "all_pairs"}}], input=CHAT)
    out = read_output(tmp_path / "all")
    assert len(out) == 3 and all(r["source"] == "forum" and r["lang"] == "en" for r in out)
    assert all("candidates" not in r for r in out)

    run_recipe([src], tmp_path / "some", [{"preference_pairs": {"keep_columns": ["lang"]}},
                                          {"chat_export": {"to": "dpo", "keep_columns": "all"}}], input=CHAT)
    (row,) = read_output(tmp_path / "some")
    assert set(row) == {"id", "lang", "chosen_score", "rejected_score", "margin", "prompt", "chosen", "rejected"}

    for op in ({"preference_pairs": {"keep_columns": ["langauge"]}},
               {"chat_export": {"to": "sft", "keep_columns": ["id", "langauge"]}},
               {"chat_format": {"keep_columns": ["langauge"]}}):
        with pytest.raises(ThresherError, match=r"'langauge'.*columns: id, messages, source, lang, candidates.*'lang'"):
            run_recipe([src], tmp_path / "err", [op], input=CHAT, overwrite=True)


def test_unknown_column_stops_the_cli_with_one_line(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "messages": [U("q"), A("a")], "topic": "x"}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({"input": {"paths": [str(src)], "text_key": None},
                                  "output": {"path": str(tmp_path / "out")}, "executor": {"type": "local", "workers": 1},
                                  "process": [{"chat_export": {"to": "sft", "keep_columns": ["id", "topc"]}}]}))
    proc = subprocess.run([str(Path(sys.executable).parent / "thresher"), "run", str(recipe), "-q"],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "keep_columns names 'topc'" in proc.stderr and "Did you mean 'topic'?" in proc.stderr


# ---------------------------------------------------------------------------------- 6. grouping
def test_group_candidates_by_comparison(tmp_path):
    """Two separate comparisons of one prompt: grouped by prompt alone they merge (and best vs
    worst pairs answers no one compared); with group_by they stay apart."""
    rows = []
    for cmp_id, answers in (("c1", [("A", 9.0), ("B", 5.0)]), ("c2", [("C", 7.0), ("D", 1.0)])):
        for j, (text, score) in enumerate(answers):
            rows.append({"id": f"{cmp_id}-{j}", "comparison_id": cmp_id, "score": score,
                         "messages": [U("same prompt"), A(text)]})
    src = write_jsonl(tmp_path / "g.jsonl", rows)
    steps = [{"preference_pairs": {"strategy": "best_vs_worst"}}]
    run_recipe([src], tmp_path / "merged", [{"candidates_group": {}}, *steps], input=CHAT)
    (merged,) = read_output(tmp_path / "merged")
    assert (merged["chosen"][0]["content"], merged["rejected"][0]["content"]) == ("A", "D")  # never compared
    res = run_recipe([src], tmp_path / "apart", [{"candidates_group": {"group_by": ["comparison_id"]}}, *steps],
                     input=CHAT)
    pairs = {r["comparison_id"]: (r["chosen"][0]["content"], r["rejected"][0]["content"])
             for r in read_output(tmp_path / "apart")}
    assert pairs == {"c1": ("A", "B"), "c2": ("C", "D")}
    assert res.ledger["candidates_group"].dropped == {"merged_into_prompt_row": 2}
    with pytest.raises(ThresherError, match="group_by names 'comparison'"):
        run_recipe([src], tmp_path / "err", [{"candidates_group": {"group_by": ["comparison"]}}], input=CHAT)
