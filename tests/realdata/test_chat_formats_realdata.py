"""Issue 15 (formats) on real sets from ../shared/data: exports read back unchanged, the plain
rendering is HH's own transcript, CSV input at scale, user columns through preference pairs."""

from __future__ import annotations

import csv
import json

from tests.conftest import read_quarantine, run_recipe

CHAT = {"text_key": None}


def _by_id(rows):
    return {r["id"]: {k: v for k, v in r.items() if v is not None} for r in rows}


def read_output(out):
    """Output rows; lines split on "\\n" only (GSM8K's text holds U+2028, a line break to splitlines)."""
    rows = []
    for f in sorted((out / "data").glob("part-*.jsonl")):
        rows += [json.loads(x) for x in f.read_text(encoding="utf-8").split("\n") if x.strip()]
    return rows


def test_hh_rlhf_plain_export_is_the_original_transcript(shared_data, tmp_path):
    """prompt + chosen of the plain DPO export is the HH transcript byte for byte, for every
    readable pair; the plain rows read back to the conversational export."""
    src = shared_data / "hh_rlhf_harmless_base_test" / "test.jsonl"
    raw = {f"test.jsonl:{i + 1}": json.loads(x) for i, x in enumerate(src.read_text(encoding="utf-8").splitlines())}
    steps = [{"chat_format": {"source": "hh_rlhf"}}]
    policy = {"max_quarantine_fraction": 0.01}  # 13 broken pairs (see test_hh_rlhf_round_trips_losslessly)
    run_recipe([src], tmp_path / "plain", [*steps, {"chat_export": {"to": "dpo", "style": "plain"}}], input=CHAT,
               policy=policy)
    plain = read_output(tmp_path / "plain")
    assert len(plain) == 2299
    for row in plain:
        orig = raw[row["id"]]
        assert row["prompt"] + row["chosen"] == orig["chosen"] and row["prompt"] + row["rejected"] == orig["rejected"]
    run_recipe([src], tmp_path / "conv", [*steps, {"chat_export": {"to": "dpo"}}], input=CHAT, policy=policy)
    res = run_recipe([tmp_path / "plain"], tmp_path / "back", [{"chat_format": {}}, {"chat_export": {"to": "dpo"}}],
                     input=CHAT)
    assert not read_quarantine(tmp_path / "back") and sum(res.ledger["chat_format"].quarantined.values()) == 0
    assert _by_id(read_output(tmp_path / "back")) == _by_id(read_output(tmp_path / "conv"))


def test_llamafactory_exports_read_back(shared_data, tmp_path):
    demos = shared_data / "llamafactory_preference_demos"
    for name, to in (("dpo_en_demo.json", "dpo"), ("dpo_zh_demo.json", "dpo"), ("kto_en_demo.json", "kto")):
        for style in ("conversational", "plain"):
            first = tmp_path / f"{name}-{style}"
            run_recipe([demos / name], first, [{"chat_format": {}}, {"chat_export": {"to": to, "style": style}}],
                       input=CHAT)
            again = tmp_path / f"{name}-{style}-again"
            res = run_recipe([first], again, [{"chat_format": {}}, {"chat_export": {"to": to, "style": style}}],
                             input=CHAT)
            assert not read_quarantine(again) and sum(res.ledger["chat_format"].quarantined.values()) == 0
            assert _by_id(read_output(again)) == _by_id(read_output(first)), (name, style)


def test_gsm8k_as_csv_matches_jsonl(shared_data, tmp_path):
    """GSM8K train written as CSV (answers span lines, quotes and commas) reads into the same
    conversations as the JSONL, through the field mapping, with row-numbered ids."""
    src = shared_data / "gsm8k" / "train.jsonl"
    rows = [json.loads(x) for x in src.read_text(encoding="utf-8").splitlines()]
    as_csv = tmp_path / "train.csv"
    with open(as_csv, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        w.writerows([r["question"], r["answer"]] for r in rows)
    mapping = [{"chat_format": {"prompt_field": "question", "response_field": "answer"}}]
    run_recipe([as_csv], tmp_path / "csv", mapping, input=CHAT, executor={"batch_size_mb": 0.5})
    run_recipe([src], tmp_path / "jsonl", mapping, input=CHAT)
    from_csv, from_jsonl = read_output(tmp_path / "csv"), read_output(tmp_path / "jsonl")
    assert len(from_csv) == len(rows) == 7473 and not read_quarantine(tmp_path / "csv")
    assert [r["messages"] for r in from_csv] == [r["messages"] for r in from_jsonl]
    assert [r["id"] for r in from_csv] == [f"train.csv:{i + 2}" for i in range(len(rows))]


def test_oasst_pairs_keep_the_tree_id(shared_data, tmp_path):
    trees = shared_data / "oasst_en_100_message_trees" / "en_100_tree.jsonl"
    run_recipe([trees], tmp_path / "dpo", [{"oasst_ranked": {}}, {"preference_pairs": {"strategy": "all_pairs"}},
                                           {"chat_export": {"to": "dpo", "keep_columns": ["id", "message_tree_id"]}}],
               input=CHAT)
    out = read_output(tmp_path / "dpo")
    assert out and all(r["message_tree_id"] for r in out)
    assert len({r["message_tree_id"] for r in out}) > 50
