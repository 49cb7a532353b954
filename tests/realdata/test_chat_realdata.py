"""Chat and preference data from ../shared/data through real runs."""

from __future__ import annotations

import json
from itertools import combinations

from tests.conftest import read_output, read_quarantine, run_recipe
from thresher.operators.common.chat import to_hh

CHAT = {"text_key": None}


def test_lima_and_alpaca_demos_through_sft_clean(shared_data, tmp_path):
    """The shipped sft-clean recipe on LIMA and LLaMA-Factory's alpaca demo: every row is accounted
    for, what comes out is TRL SFT, and the answers are the sources' own."""
    from thresher.pipeline.recipe import load_recipe
    from thresher.pipeline.run import run

    for name, path, n in (("lima", shared_data / "lima" / "lima.json", 1029),
                          ("alpaca", shared_data / "llamafactory_sft_demos" / "alpaca_en_demo.json", 999)):
        src = json.loads(path.read_text(encoding="utf-8"))
        assert len(src) == n
        res = run(load_recipe("sft-clean", inputs=[str(path)], output=str(tmp_path / name)))
        out = read_output(tmp_path / name)
        led = res.ledger
        assert led.input_rows == n
        assert len(out) + sum(e.n_dropped + e.n_quarantined for e in led.entries.values()) == n
        assert not read_quarantine(tmp_path / name)  # both sets are well-formed
        assert len(out) > 0.8 * n
        answers = {r["output"] for r in src}
        for row in out:
            assert set(row) == {"id", "messages"} and row["messages"][-1]["role"] == "assistant"
            assert row["messages"][-1]["content"] in answers
        dropped = {reason for e in led.entries.values() for reason in e.dropped}
        assert dropped <= {"refusal_or_boilerplate", "response_too_short", "prompt_too_short", "response_too_long",
                           "exact_duplicate", "overlaps_eval_set"}


def _independent_pair_count(tree_file, max_pairs: int) -> tuple[int, int]:
    """(prompts with >= 2 ranked replies, pairs) by walking the trees with an explicit stack."""
    prompts = pairs = 0
    for line in tree_file.read_text(encoding="utf-8").splitlines():
        stack = [json.loads(line)["prompt"]]
        while stack:
            node = stack.pop()
            if node.get("deleted") or node.get("review_result") is False:
                continue
            kids = [k for k in node.get("replies") or [] if not k.get("deleted") and k.get("review_result") is not False]
            if node["role"] == "prompter":
                ranked = [k for k in kids if k["role"] == "assistant" and k.get("rank") is not None]
                if len(ranked) >= 2:
                    ok = sum(1 for a, b in combinations(ranked, 2)
                             if a["rank"] != b["rank"] and a["text"].strip() != b["text"].strip())
                    if ok:
                        prompts += 1
                        pairs += min(ok, max_pairs)
            stack.extend(kids)
    return prompts, pairs


def test_oasst_trees_to_dpo_pairs_match_the_ranks(shared_data, tmp_path):
    trees = shared_data / "oasst_en_100_message_trees" / "en_100_tree.jsonl"
    res = run_recipe([trees], tmp_path / "dpo", [{"oasst_ranked": {}},
                                                 {"preference_pairs": {"strategy": "all_pairs", "max_pairs": 50}},
                                                 {"chat_export": {"to": "dpo"}}], input=CHAT)
    out = read_output(tmp_path / "dpo")
    prompts, pairs = _independent_pair_count(trees, 50)
    assert len(out) == pairs and pairs > 300
    assert len({r["id"].split("#")[0] for r in out}) == prompts
    assert res.ledger["oasst_ranked"].rows_in == 100
    for r in out:
        assert r["prompt"][-1]["role"] == "user" and r["chosen"][0]["content"] != r["rejected"][0]["content"]


def test_hh_rlhf_round_trips_losslessly(shared_data, tmp_path):
    src = shared_data / "hh_rlhf_harmless_base_test" / "test.jsonl"
    raw = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines()]
    res = run_recipe([src], tmp_path / "hh", [{"chat_format": {"source": "hh_rlhf"}}, {"chat_export": {"to": "dpo"}}],
                     input=CHAT)
    out = read_output(tmp_path / "hh")
    bad = read_quarantine(tmp_path / "hh")
    assert len(out) + len(bad) == len(raw) == 2312
    # 5 pairs differ before the last reply; 4 have an empty chosen reply ("Assistant: " and nothing);
    # 4 have two Assistant turns in a row before it
    assert {b["reason"].split(" (")[0] for b in bad} == {"prompts differ", "empty turn", "roles not alternating"}
    assert len(bad) == 13
    by_line = {f"test.jsonl:{i + 1}": r for i, r in enumerate(raw)}
    for row in out:
        orig = by_line[row["id"]]
        assert to_hh(row["prompt"], row["chosen"]) == orig["chosen"]
        assert to_hh(row["prompt"], row["rejected"]) == orig["rejected"]
    assert res.ledger["chat_format"].quarantined == {"prompts differ": 5, "empty turn": 4, "roles not alternating": 4}


def test_llamafactory_dpo_and_kto_demos(shared_data, tmp_path):
    demos = shared_data / "llamafactory_preference_demos"
    run_recipe([demos / "dpo_en_demo.json"], tmp_path / "dpo", [{"chat_format": {}}, {"chat_export": {"to": "dpo"}}],
               input=CHAT)
    dpo = read_output(tmp_path / "dpo")
    src = json.loads((demos / "dpo_en_demo.json").read_text(encoding="utf-8"))
    assert len(dpo) == len(src) == 300
    assert all(r["chosen"][0]["content"] == s["chosen"]["value"] and r["rejected"][0]["content"] == s["rejected"]["value"]
               for r, s in zip(dpo, src, strict=True))
    run_recipe([demos / "kto_en_demo.json"], tmp_path / "kto", [{"chat_format": {}}, {"chat_export": {"to": "kto"}}],
               input=CHAT)
    kto = read_output(tmp_path / "kto")
    src = json.loads((demos / "kto_en_demo.json").read_text(encoding="utf-8"))
    assert len(kto) == len(src)
    assert sum(r["label"] for r in kto) == sum(1 for s in src if s["label"])
    assert all(r["completion"][0]["role"] == "assistant" and r["prompt"][-1]["role"] == "user" for r in kto)


def test_gsm8k_decontamination_finds_the_shared_questions(shared_data, tmp_path):
    """GSM8K's test_socratic split asks the test split's questions (with Socratic answers): every one
    must be caught; train questions that are not test questions mostly stay."""
    g = shared_data / "gsm8k"
    test_q = {json.loads(x)["question"] for x in (g / "test.jsonl").read_text(encoding="utf-8").splitlines()}
    soc = [json.loads(x) for x in (g / "test_socratic.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [json.loads(x) for x in (g / "train.jsonl").read_text(encoding="utf-8").splitlines()][:2000]
    shared = sum(1 for r in soc if r["question"] in test_q)  # exact string match: independent of n-grams
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in train + soc), encoding="utf-8")
    res = run_recipe([mixed], tmp_path / "out", [
        {"chat_format": {"source": "fields", "prompt_field": "question", "response_field": "answer"}},
        {"decontamination_filter": {"path": str(g / "test.jsonl"), "field": "question", "ngram": 13}}], input=CHAT)
    out = read_output(tmp_path / "out")
    kept_q = {r["messages"][0]["content"] for r in out}
    assert shared == 1319 and not (kept_q & test_q)  # every shared question was removed
    dropped = res.ledger["decontamination_filter"].dropped["overlaps_eval_set"]
    assert shared <= dropped <= shared + len(train) // 50  # train rows caught only by chance 13-gram overlaps
