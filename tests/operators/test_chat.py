"""Chat formats, TRL export and preference pairs, through real runs where the ledger matters."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ACCEPT_BAD_ROWS, make_recipe, read_output, read_quarantine, run_recipe, write_jsonl
from thresher.operators.common.chat import (
    ChatFormatError,
    check,
    from_alpaca,
    from_hh,
    from_openai,
    from_sharegpt,
    to_hh,
)
from thresher.pipeline.errors import InputError, RecipeError

CHAT_INPUT = {"text_key": None}


def test_alpaca_with_history_and_system():
    row = {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief",
           "history": [["hi", "hello!"]]}
    assert from_alpaca(row)["messages"] == [
        {"role": "system", "content": "Be brief"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello!"}, {"role": "user", "content": "Translate\nbonjour"},
        {"role": "assistant", "content": "hello"}]


def test_sharegpt_dpo_and_openai_kto():
    row = {"conversations": [{"from": "human", "value": "q?"}], "chosen": {"from": "gpt", "value": "good"},
           "rejected": {"from": "gpt", "value": "bad"}}
    c = from_sharegpt(row)
    assert c["messages"] == [{"role": "user", "content": "q?"}] and c["chosen"][0]["content"] == "good"
    k = from_openai({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": False})
    assert k["completion"] == [{"role": "assistant", "content": "a"}] and k["label"] is False


@pytest.mark.parametrize("messages,reason", [
    ([], "empty conversation"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "roles not alternating"),
    ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "c"}], "empty turn"),
    ([{"role": "assistant", "content": "c"}], "starts with an assistant turn"),
    ([{"role": "user", "content": "a"}], "wrong last turn"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "c"}],
     "misplaced system message"),
    ([{"role": "bot", "content": "a"}], "unknown role"),
])
def test_broken_structure_is_named(messages, reason):
    with pytest.raises(ChatFormatError, match=reason):
        check(messages)


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: s.strip() and "\n\nHuman: " not in s and "\n\nAssistant: " not in s and not s.endswith("\n"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_text, _text), min_size=1, max_size=4), _text, _text)
def test_hh_round_trip_is_lossless(turns, good, bad):
    msgs = [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})][:-1]
    chosen = to_hh(msgs, [{"role": "assistant", "content": good}])
    rejected = to_hh(msgs, [{"role": "assistant", "content": bad}])
    row = from_hh({"chosen": chosen, "rejected": rejected})
    assert to_hh(row["messages"], row["chosen"]) == chosen and to_hh(row["messages"], row["rejected"]) == rejected


def test_chat_format_run_quarantines_broken_rows_and_balances(tmp_path):
    rows = [
        {"id": "a1", "instruction": "Say hi", "input": "", "output": "hi"},
        {"id": "a2", "instruction": "Say hi", "input": "", "output": ""},  # empty answer
        {"id": "s1", "conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q2"},
                                       {"from": "gpt", "value": "a"}]},  # two user turns
        {"id": "o1", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"id": "x1", "foo": "bar"},  # unknown format
    ]
    src = write_jsonl(tmp_path / "chat.jsonl", rows)
    res = run_recipe([src], tmp_path / "out", [{"chat_format": {}}, {"chat_export": {"to": "sft"}}], input=CHAT_INPUT,
                     policy=ACCEPT_BAD_ROWS)
    out = read_output(tmp_path / "out")
    assert [r["id"] for r in out] == ["a1", "o1"]
    assert out[0]["messages"][-1] == {"role": "assistant", "content": "hi"}
    q = {r["id"]: r["reason"] for r in read_quarantine(tmp_path / "out")}
    assert q["a2"].startswith("empty turn") and q["s1"].startswith("roles not alternating")
    assert q["x1"].startswith("unknown chat format")
    led = res.ledger["chat_format"]
    assert dict(led.quarantined) == {"empty turn": 1, "roles not alternating": 1, "unknown chat format": 1}
    assert res.ledger.input_rows == len(out) + 3


def test_a_text_op_on_data_without_text_is_refused(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [{"messages": []}])
    with pytest.raises(RecipeError, match="reads the text column"):
        make_recipe([src], tmp_path / "o", [{"text_length_filter": {"min_words": 1}}], input=CHAT_INPUT).build_ops()


def test_json_array_input_with_item_numbers(tmp_path):
    f = tmp_path / "demo.json"
    f.write_text(json.dumps([{"instruction": "a", "output": "b"}, 7, {"instruction": "c", "output": "d"}]))
    run_recipe([f], tmp_path / "out", [{"chat_format": {}}], input=CHAT_INPUT, policy=ACCEPT_BAD_ROWS)
    assert len(read_output(tmp_path / "out")) == 2
    (bad,) = read_quarantine(tmp_path / "out")
    assert bad["line"] == 2 and "not a JSON object" in bad["reason"]
    broken = tmp_path / "broken.json"
    broken.write_text('[{"a": 1},\n {"b": ]')
    with pytest.raises(InputError, match="line 2"):
        run_recipe([broken], tmp_path / "out2", [{"chat_format": {}}], input=CHAT_INPUT)


def _ranked(rid, texts_scores, by="score"):
    return {"id": rid, "messages": [{"role": "user", "content": f"q{rid}"}],
            "candidates": [{"content": t, "rank": i if by == "rank" else None, "score": s if by == "score" else None}
                           for i, (t, s) in enumerate(texts_scores)]}


def test_dpo_export_conversational_and_plain(tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [_ranked("p1", [("great", 9), ("poor", 2), ("fine", 5)])])
    for style in ("conversational", "plain"):
        out = tmp_path / style
        run_recipe([src], out, [{"preference_pairs": {"strategy": "best_vs_worst"}},
                                {"chat_export": {"to": "dpo", "style": style}}], input=CHAT_INPUT)
        (row,) = read_output(out)
        if style == "plain":
            # one rendering for every prompt (see render_plain): prompt + reply is the HH transcript
            assert row["prompt"] == "\n\nHuman: qp1\n\nAssistant:"
            assert row["chosen"] == " great" and row["rejected"] == " poor"
        else:
            assert row["prompt"] == [{"role": "user", "content": "qp1"}]
            assert row["chosen"] == [{"role": "assistant", "content": "great"}]


_cands = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "a "]), st.integers(0, 5)), min_size=0, max_size=6)


@settings(max_examples=25, deadline=None)
@given(st.lists(_cands, min_size=1, max_size=5), st.integers(0, 2), st.integers(1, 4),
       st.sampled_from(["best_vs_worst", "all_pairs", "best_vs_random"]))
def test_pairs_invariants(tmp_path_factory, prompts, margin, max_pairs, strategy):
    tmp = tmp_path_factory.mktemp("pairs")
    rows = [_ranked(f"p{i}", c) for i, c in enumerate(prompts)]
    src = write_jsonl(tmp / "r.jsonl", rows)
    res = run_recipe([src], tmp / "out", [{"preference_pairs": {"strategy": strategy, "min_margin": margin,
                                                                  "max_pairs": max_pairs}}], input=CHAT_INPUT)
    out = read_output(tmp / "out")
    per_prompt: dict[str, int] = {}
    for r in out:
        assert r["chosen_score"] - r["rejected_score"] > margin  # ties never pair
        assert r["chosen"][0]["content"].strip() != r["rejected"][0]["content"].strip()
        per_prompt[r["messages"][0]["content"]] = per_prompt.get(r["messages"][0]["content"], 0) + 1
    assert all(n <= max_pairs for n in per_prompt.values())
    e = res.ledger["preference_pairs"]
    assert not e.quarantined  # no op errors
    assert e.rows_in + e.created == e.rows_out + e.n_dropped  # prompts without a pair are dropped, with a reason
    assert e.rows_in - sum(e.dropped.values()) == len(per_prompt)


def test_llm_respond_answers_caches_and_quarantines(tmp_path):
    from tests.llm_test_server import ChatTestServer

    rows = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(6)]
    rows.append({"id": "done", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    with ChatTestServer() as server:
        server.faults.extend(["500"] * 3)  # q0's request fails for good (max_retries 2), the rest succeed
        llm = {"base_url": server.url, "model": "m", "max_retries": 2, "backoff_s": 0.01, "concurrency": 1,
               "cache_dir": str(tmp_path / "cache")}
        res = run_recipe([src], tmp_path / "out", [{"llm_respond": {"llm": llm}}], input=CHAT_INPUT,
                         policy=ACCEPT_BAD_ROWS)
        out = {r["id"]: r for r in read_output(tmp_path / "out")}
        assert set(out) == {f"q{i}" for i in range(1, 6)} | {"done"}
        assert out["q3"]["messages"][-1] == {"role": "assistant", "content": "reply to: question 3"}
        assert out["done"]["messages"][-1]["content"] == "a"  # already answered: untouched
        (bad,) = read_quarantine(tmp_path / "out")
        assert bad["id"] == "q0" and "HTTP 500" in bad["reason"]
        c = res.ledger["llm_respond"].counters
        assert c["llm_requests"] == 6 and c["llm_failed"] == 1 and c["llm_retries"] == 2
        n = len(server.requests)
        run_recipe([src], tmp_path / "again", [{"llm_respond": {"llm": llm}}], input=CHAT_INPUT, policy=ACCEPT_BAD_ROWS)
        assert len(server.requests) == n + 1  # only the failed one is asked again; the rest come from the cache


def _chat(rid, user, reply):
    return {"id": rid, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def test_sft_filters(tmp_path):
    rows = [_chat("ok", "Explain tides please", "The moon pulls the oceans, so the water rises and falls twice a day."),
            _chat("refuse", "Tell me a joke", "As an AI language model, I cannot tell jokes."),
            _chat("short", "Hi", "Hi"),
            _chat("leak", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
                  "72")]
    src = write_jsonl(tmp_path / "sft.jsonl", rows)
    evalset = write_jsonl(tmp_path / "eval.jsonl", [{"question": "NATALIA sold clips to 48 of her friends in April, and "
                                                                 "then she sold half as many clips in May! How many?"}])
    res = run_recipe([src], tmp_path / "out", [
        {"decontamination_filter": {"path": str(evalset), "field": "question", "ngram": 8}},
        {"refusal_filter": {}},
        {"chat_length_filter": {"min_response_tokens": 3}},
    ], input=CHAT_INPUT)
    assert [r["id"] for r in read_output(tmp_path / "out")] == ["ok"]
    assert res.ledger["decontamination_filter"].dropped == {"overlaps_eval_set": 1}
    assert res.ledger["refusal_filter"].dropped == {"refusal_or_boilerplate": 1}
    assert res.ledger["chat_length_filter"].dropped == {"response_too_short": 1}


def test_fields_source_and_missing_eval_set(tmp_path):
    src = write_jsonl(tmp_path / "g.jsonl", [{"question": "2+2?", "answer": "4"}])
    run_recipe([src], tmp_path / "out", [{"chat_format": {"source": "fields", "prompt_field": "question",
                                                          "response_field": "answer"}}], input=CHAT_INPUT)
    (row,) = read_output(tmp_path / "out")
    assert row["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert "question" not in row
    from thresher.pipeline.errors import ThresherError

    with pytest.raises(ThresherError, match="does not exist"):
        run_recipe([src], tmp_path / "o2", [{"chat_format": {"source": "fields", "prompt_field": "question",
                                                             "response_field": "answer"}},
                                            {"decontamination_filter": {"path": str(tmp_path / "nope.jsonl")}}], input=CHAT_INPUT)


def test_shipped_chat_recipes_on_their_demos(tmp_path):
    from thresher.pipeline.recipe import load_recipe
    from thresher.pipeline.run import run

    res = run(load_recipe("sft-clean", output=str(tmp_path / "sft")))
    out = read_output(tmp_path / "sft")
    ids = {r["id"] for r in out}
    assert not ids & {"chat-refusal", "chat-leak", "chat-broken-empty", "chat-broken-roles"}
    assert not any(i.endswith("-copy") for i in ids)  # exact duplicate prompts: the first copy stays
    assert all(set(r) == {"id", "messages"} and r["messages"][-1]["role"] == "assistant" for r in out)
    assert res.ledger["decontamination_filter"].dropped == {"overlaps_eval_set": 1}
    assert sum(res.ledger["chat_format"].quarantined.values()) == 2

    from thresher.pipeline.demo import demo_path

    trees = [json.loads(x) for x in demo_path("ranked").read_text().splitlines()]

    def ranked_prompts(node):  # independent: pairs of differently worded replies per prompt, at most 4
        kids = node.get("replies") or []
        texts = [k["text"].strip() for k in kids]
        distinct = sum(1 for i in range(len(texts)) for j in range(i + 1, len(texts)) if texts[i] != texts[j])
        here = [min(4, distinct)] if node["role"] == "prompter" else []
        return here + [n for k in kids for n in ranked_prompts(k)]

    expected = sum(n for t in trees for n in ranked_prompts(t["prompt"]))
    run(load_recipe("dpo-from-ranked", output=str(tmp_path / "dpo")))
    pairs = read_output(tmp_path / "dpo")
    assert len(pairs) == expected
    assert all(set(r) == {"id", "prompt", "chosen", "rejected"} for r in pairs)


def _judge_server():
    """A test server whose 'model' answers questions with seed-dependent text, judges answers
    pointwise by how many words they have (chattily), and judges pairs either consistently (the
    longer answer wins) or with pure position bias (always A) when the question says 'biased'."""
    import re as _re

    from tests.llm_test_server import ChatTestServer

    def answer(body):
        text = body["messages"][-1]["content"]
        if text.startswith("Rate how well"):
            ans = text.split("[Answer]\n", 1)[1].split("\n\nReply with", 1)[0]
            return f"Let me think. The answer is fine. Score: {min(10, len(ans.split()))}/10 overall."
        if text.startswith("Which answer"):
            if "biased" in text:
                return "[[A]]"
            a = _re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]", text, _re.S).group(1)
            b = _re.search(r"\[Answer B\]\n(.*?)\n\nReply", text, _re.S).group(1)
            return '{"winner": "%s"}' % ("A" if len(a) > len(b) else "B" if len(b) > len(a) else "tie")
        return "word " * (1 + body.get("seed", 0) % 7) + "end"

    return ChatTestServer(answer=answer)


def test_pointwise_judge_parses_chatty_scores_and_keeps_confident(tmp_path):
    rows = [_chat(f"r{i}", f"question {i}", " ".join(["w"] * (i + 1))) for i in range(5)]
    src = write_jsonl(tmp_path / "a.jsonl", rows)
    with _judge_server() as server:
        llm = {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path / "c"), "backoff_s": 0.01}
        res = run_recipe([src], tmp_path / "out", [{"llm_judge": {"llm": llm, "samples": 3, "min_confidence": 0.5}}],
                         input=CHAT_INPUT)
    out = read_output(tmp_path / "out")
    assert [r["judge_score"] for r in out] == [1.0, 2.0, 3.0, 4.0, 5.0]  # words in each answer, read from "Score: n/10"
    assert all(r["judge_confidence"] == 1.0 for r in out)
    assert res.ledger["llm_judge"].counters["llm_requests"] == 15


def test_pairwise_judge_cancels_position_bias(tmp_path):
    rows = [dict(_chat("fair", "which?", "x"), messages=[{"role": "user", "content": "which?"}],
                 chosen=[{"role": "assistant", "content": "short"}],
                 rejected=[{"role": "assistant", "content": "a much longer answer"}]),
            dict(_chat("bias", "biased question", "x"), messages=[{"role": "user", "content": "biased question"}],
                 chosen=[{"role": "assistant", "content": "one"}], rejected=[{"role": "assistant", "content": "two!"}])]
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    with _judge_server() as server:
        llm = {"base_url": server.url, "model": "judge", "cache_dir": str(tmp_path / "c")}
        res = run_recipe([src], tmp_path / "out", [{"llm_pairwise_judge": {"llm": llm}}], input=CHAT_INPUT)
    (row,) = read_output(tmp_path / "out")
    assert row["id"] == "fair" and row["pair_verdict"] == "rejected"
    assert row["chosen"][0]["content"] == "a much longer answer"  # relabelled: the judge preferred it in both orders
    assert res.ledger["llm_pairwise_judge"].dropped == {"judged_tie": 1}  # "always A" disagrees with itself


def test_synthetic_preference_workflow(tmp_path):
    """prompts -> N sampled answers -> judge -> pairs -> TRL DPO, against the test server."""
    rows = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"prompt {i}"}]} for i in range(4)]
    src = write_jsonl(tmp_path / "prompts.jsonl", rows)
    with _judge_server() as server:
        llm = {"base_url": server.url, "model": "m", "cache_dir": str(tmp_path / "c")}
        run_recipe([src], tmp_path / "out", [
            {"llm_candidates": {"llm": {**llm, "temperature": 0.8}, "n": 3}},
            {"llm_judge": {"llm": llm, "target": "candidates"}},
            {"preference_pairs": {"strategy": "best_vs_worst"}},
            {"chat_export": {"to": "dpo", "keep_columns": ["id"]}},
        ], input=CHAT_INPUT)
    out = read_output(tmp_path / "out")
    assert len(out) == 4
    for r in out:  # seeds 0, 1, 2 give 1, 2, 3 words + "end": the judge prefers the longest
        assert r["chosen"][0]["content"] == "word word word end" and r["rejected"][0]["content"] == "word end"


def test_heuristic_score_without_llm(tmp_path):
    good = "Tides come from the moon's pull.\nThe ocean bulges toward it. Another bulge forms opposite. " * 3
    rows = [_chat("good", "Explain tides", good), _chat("refuse", "Explain tides", "As an AI language model, I cannot.")]
    src = write_jsonl(tmp_path / "h.jsonl", rows)
    run_recipe([src], tmp_path / "out", [{"heuristic_score": {}}], input=CHAT_INPUT)
    scores = {r["id"]: r["judge_score"] for r in read_output(tmp_path / "out")}
    assert scores["good"] > 5 > scores["refuse"]


def _run_shipped(recipe: str, server_cm, tmp_path, monkeypatch):
    """Run a shipped recipe into tmp_path/out with its LLM endpoint pointed at a test server."""
    from thresher.pipeline.recipe import load_recipe
    from thresher.pipeline.run import run

    with server_cm as server:
        monkeypatch.setenv("THRESHER_LLM_BASE_URL", server.url)
        monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
        return run(load_recipe(recipe, output=str(tmp_path / "out")))


@pytest.mark.slow
def test_shipped_dpo_synthetic_recipe_against_a_test_server(tmp_path, monkeypatch):
    res = _run_shipped("dpo-synthetic", _judge_server(), tmp_path, monkeypatch)
    out = read_output(tmp_path / "out")
    e = res.ledger
    assert e["llm_candidates"].counters["llm_requests"] == 4 * e["llm_candidates"].rows_in
    assert out and all(len(r["chosen"][0]["content"]) > len(r["rejected"][0]["content"]) for r in out)
    assert len(out) == e["preference_pairs"].rows_out


def _augment_server():
    from tests.llm_test_server import ChatTestServer

    def answer(body):
        text = body["messages"][-1]["content"]
        if text.startswith("You write new, diverse tasks"):  # one near-copy of an example, two novel tasks
            first = text.split("- ", 1)[1].split("\n", 1)[0]
            return json.dumps({"tasks": [first + " please", "Compose a haiku about rivers", "List three prime numbers"]})
        if text.startswith("Rewrite the task"):
            task = text.rsplit("Task:\n", 1)[1]
            return "Sure! Here is the rewritten task:\n\n" + ("" if "broken" in task else f'"{task} Explain each step."')
        if text.startswith("Read the text"):
            if "gibberish" in text:
                return "I could not find anything."
            return "Here you go:\n1. {\"question\": \"x\"}\n" + json.dumps(
                {"pairs": [{"question": "What flows?", "answer": "The river."}, {"question": "Where?", "answer": "East."}]})
        if text.startswith("A model answered this task badly"):
            return "1. Add 17 and 26.\n2. Subtract 9 from 40.\n- Multiply 6 by 7."
        return "ok"

    return ChatTestServer(answer=answer)


def test_augmentation_ops(tmp_path):
    prompts = ["Write a poem about autumn leaves falling", "Explain how a bicycle gear works",
               "Summarise the plot of Hamlet briefly", "Give tips for learning to swim"]
    rows = [{"id": f"s{i}", "messages": [{"role": "user", "content": t}], "score": float(i)} for i, t in enumerate(prompts)]
    rows.append({"id": "s-broken", "messages": [{"role": "user", "content": "broken task"}], "score": 9.0})
    src = write_jsonl(tmp_path / "seed.jsonl", rows)
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": "d1", "text": "The river flows east past the mill."},
                                                  {"id": "d2", "text": "gibberish"}])
    with _augment_server() as server:
        llm = {"base_url": server.url, "model": "gen", "cache_dir": str(tmp_path / "c")}
        res = run_recipe([src], tmp_path / "exp", [{"llm_expand_instructions": {"llm": llm, "every": 5, "n": 3}}],
                         input=CHAT_INPUT)
        out = read_output(tmp_path / "exp")
        new = [r["messages"][0]["content"] for r in out if "#new" in r["id"]]
        assert new == ["Compose a haiku about rivers", "List three prime numbers"]  # the near-copy failed ROUGE-L
        assert res.ledger["llm_expand_instructions"].counters["not_novel"] == 1

        res = run_recipe([src], tmp_path / "evo", [{"llm_evolve_instruction": {"llm": llm}}], input=CHAT_INPUT,
                         policy=ACCEPT_BAD_ROWS)
        evo = {r["id"]: r for r in read_output(tmp_path / "evo")}
        assert evo["s1"]["messages"][-1]["content"] == "Explain how a bicycle gear works Explain each step."
        assert evo["s1"]["source_instruction"] == "Explain how a bicycle gear works"
        assert "s-broken" not in evo and res.ledger["llm_evolve_instruction"].quarantined == {"rewrite unusable": 1}

        res = run_recipe([docs], tmp_path / "qa", [{"llm_qa_from_text": {"llm": llm, "n": 2}}], policy=ACCEPT_BAD_ROWS)
        qa = read_output(tmp_path / "qa")
        assert [r["id"] for r in qa] == ["d1#qa0", "d1#qa1"] and qa[0]["messages"][1]["content"] == "The river."
        (bad,) = read_quarantine(tmp_path / "qa")
        assert "gibberish" in bad["raw"] and bad["reason"].startswith("generator answer unparseable")
        led = res.ledger["llm_qa_from_text"]
        assert led.rows_in + led.created == led.rows_out + led.n_dropped + led.n_quarantined

        run_recipe([src], tmp_path / "aug", [{"llm_targeted_augment": {"llm": llm, "score_column": "score",
                                                                        "threshold": 2, "n": 3}}], input=CHAT_INPUT)
        aug = read_output(tmp_path / "aug")
        assert len(aug) == 5 + 2 * 3  # rows scoring 0 and 1 get three new tasks each (list items parsed)
        assert {r["messages"][0]["content"] for r in aug if "#aug" in r["id"]} == {
            "Add 17 and 26.", "Subtract 9 from 40.", "Multiply 6 by 7."}


def test_shipped_augment_instructions_recipe_against_a_test_server(tmp_path, monkeypatch):
    res = _run_shipped("augment-instructions", _augment_server(), tmp_path, monkeypatch)
    out = read_output(tmp_path / "out")
    new = [r for r in out if "#new" in r["id"]]
    assert new and all(r["messages"][-1] == {"role": "assistant", "content": "ok"} for r in new)
    assert res.ledger["llm_expand_instructions"].counters["new_tasks"] >= len(new)


def test_candidates_group_then_pairs(tmp_path):
    rows = []
    for p in range(3):
        for j, s in enumerate([3.0, 8.0, 5.0]):
            rows.append({"id": f"p{p}-{j}", "score": s, "messages": [{"role": "user", "content": f"prompt {p}"},
                                                                      {"role": "assistant", "content": f"answer {p}.{j}"}]})
    rows.append({"id": "solo", "score": 1.0, "messages": [{"role": "user", "content": "alone"},
                                                          {"role": "assistant", "content": "one answer"}]})
    src = write_jsonl(tmp_path / "g.jsonl", rows[::-1])  # groups need not be contiguous
    res = run_recipe([src], tmp_path / "out", [{"candidates_group": {}},
                                               {"preference_pairs": {"strategy": "best_vs_worst"}}], input=CHAT_INPUT)
    out = read_output(tmp_path / "out")
    assert sorted((r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in out) == [
        (f"answer {p}.1", f"answer {p}.0") for p in range(3)]
    assert res.ledger["candidates_group"].dropped == {"merged_into_prompt_row": 6}
    assert res.ledger["preference_pairs"].dropped == {"too_few_candidates": 1}


def test_length_controlled_scores_remove_the_length_effect(tmp_path):
    """Scores that only reward length: after control every candidate of a prompt scores the same,
    so no pair forms; a quality gap at equal length survives."""
    import math

    rows = []
    for p in range(6):
        cands = [{"content": " ".join(["w"] * n), "rank": None, "score": 2 * math.log1p(n)} for n in (5, 20, 80)]
        rows.append({"id": f"len{p}", "messages": [{"role": "user", "content": f"q{p}"}], "candidates": cands})
    rows.append({"id": "quality", "messages": [{"role": "user", "content": "q"}],
                 "candidates": [{"content": "good answer here", "rank": None, "score": 2 * math.log1p(3) + 3},
                                {"content": "bad answer here", "rank": None, "score": 2 * math.log1p(3)}]})
    src = write_jsonl(tmp_path / "lc.jsonl", rows)
    res = run_recipe([src], tmp_path / "out", [{"length_controlled_scores": {}},
                                               {"preference_pairs": {"min_margin": 0.5}}], input=CHAT_INPUT)
    out = read_output(tmp_path / "out")
    assert [r["id"] for r in out] == ["quality#pair0"]
    assert res.ledger["preference_pairs"].dropped == {"no_valid_pair": 6}


@pytest.mark.network  # chat_language_filter's lid.176 model
def test_language_of_each_turn_and_relevance(tmp_path):
    rows = [
        _chat("en", "How do tides work in the ocean and why are there two a day?",
              "Tides come from the moon's gravity pulling the ocean; the earth turns under two bulges, so two tides a day."),
        _chat("fr-answer", "How do tides work in the ocean and why are there two a day?",
              "Les marées viennent de l'attraction de la lune sur les océans, et la terre tourne sous deux renflements."),
        _chat("off-topic", "How do tides work in the ocean and why are there two a day?",
              "Bananas are yellow fruits rich in potassium, popular with athletes everywhere."),
    ]
    src = write_jsonl(tmp_path / "l.jsonl", rows)
    res = run_recipe([src], tmp_path / "out", [{"chat_language_filter": {"languages": ["en", "fr"]}},
                                               {"relevance_filter": {"min_coverage": 0.1, "min_prompt_words": 3}}],
                     input=CHAT_INPUT)
    out = read_output(tmp_path / "out")
    assert [r["id"] for r in out] == ["en"] and out[0]["prompt_lang"] == "en"
    assert res.ledger["chat_language_filter"].dropped == {"answered_in_another_language": 1}
    assert res.ledger["relevance_filter"].dropped == {"response_off_topic": 1}
