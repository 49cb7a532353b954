"""Trace samples (issue 14, item 5): a seeded random sample of dropped rows per op and per reason —
not the first N —, the same for any number of workers and on Ray, with the row's content whatever
its shape (chat rows showed `"text": ""`)."""

from __future__ import annotations

import json

from tests.conftest import run_recipe, write_jsonl


def trace(out, name):
    (f,) = (out / "trace").glob(f"*-{name}.jsonl")
    return [json.loads(x) for x in f.read_text().splitlines()]


def docs(n=600):
    rows = []
    for i in range(n):
        words = 2 if i % 3 == 0 else (400 if i % 3 == 1 else 20)  # too few / too many / kept
        rows.append({"id": f"d{i:04d}", "text": " ".join(["word"] * words)})
    return rows


def test_a_seeded_sample_per_reason_the_same_for_any_workers_and_ray(tmp_path, local_ray):
    for i in range(4):
        write_jsonl(tmp_path / "in" / f"p{i}.jsonl", docs()[i * 150:(i + 1) * 150])
    process = [{"text_length_filter": {"min_words": 5, "max_words": 100}}]
    samples = []
    for name, extra in (("w1", {"workers": 1}), ("w2", {"workers": 2}),
                        ("ray", {"executor": {"type": "ray"}})):
        out = tmp_path / name
        run_recipe([tmp_path / "in"], out, process, output={"trace_samples": 10}, **extra)
        recs = trace(out, "text_length_filter")
        samples.append([(r["id"], r["reason"]) for r in recs])
    assert samples[0] == samples[1] == samples[2]
    by_reason = {}
    for rid, reason in samples[0]:
        by_reason.setdefault(reason, []).append(rid)
    assert set(by_reason) == {"too_few_words", "too_many_words"} and all(len(v) == 10 for v in by_reason.values())
    first_ten = [f"d{i:04d}" for i in range(0, 30, 3)]  # the first 10 rows dropped for too few words
    assert by_reason["too_few_words"] != first_ten
    ids = sorted(int(r[1:]) for r in by_reason["too_few_words"])
    assert ids[-1] > 300  # drawn from the whole input, not its start
    # another seed, another sample
    run_recipe([tmp_path / "in"], tmp_path / "s2", process, output={"trace_samples": 10}, seed=7)
    assert [(r["id"], r["reason"]) for r in trace(tmp_path / "s2", "text_length_filter")] != samples[0]


def test_chat_rows_are_traced_with_their_turns(tmp_path):
    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                         {"role": "assistant", "content": "As an AI language model, I cannot help."}]}
            for i in range(5)]
    src = write_jsonl(tmp_path / "chat.jsonl", rows)
    run_recipe([src], tmp_path / "out", [{"refusal_filter": {}}], input={"text_key": None})
    recs = trace(tmp_path / "out", "refusal_filter")
    assert len(recs) == 5 and "text" not in recs[0]
    assert recs[0]["content"]["messages"][1]["content"].startswith("As an AI language model")
