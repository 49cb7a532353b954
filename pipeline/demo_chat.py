"""Built-in chat demo sets, so the chat recipes run with no data: ``demo:chat`` (SFT rows in
alpaca, ShareGPT and OpenAI formats, with duplicates, refusals, a leaked benchmark question and
broken rows) and ``demo:ranked`` (OpenAssistant-style message trees with ranked replies)."""

from __future__ import annotations

import json
import random

TOPICS = ["tides", "photosynthesis", "compound interest", "the water cycle", "binary search", "volcanoes",
          "vaccines", "inflation", "black holes", "recycling", "the printing press", "solar panels"]
STYLES = ["Explain {t} to a child.", "Summarise how {t} works in three sentences.", "What are common myths about {t}?",
          "Write a short quiz about {t}.", "Why does {t} matter?"]
FACTS = ["It depends on a few simple forces that act all the time.", "People have studied it for centuries.",
         "Small changes add up over long periods.", "It can be measured with simple tools.",
         "Scientists still debate some of the details.", "It affects daily life more than most people notice."]
LEAKED = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " \
         "How many clips did Natalia sell altogether in April and May?"  # GSM8K train question 1


def _answer(rng: random.Random, topic: str) -> str:
    return f"Here is how {topic} works. " + " ".join(rng.sample(FACTS, 3))


def chat_records(n: int = 300, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        prompt = rng.choice(STYLES).format(t=topic) + f" Use at most {rng.randint(3, 40) * 10} words."
        answer = _answer(rng, topic)
        kind = i % 3
        if kind == 0:
            rows.append({"id": f"chat-{i}", "instruction": prompt, "input": "", "output": answer})
        elif kind == 1:
            rows.append({"id": f"chat-{i}", "conversations": [{"from": "human", "value": prompt},
                                                              {"from": "gpt", "value": answer}]})
        else:
            rows.append({"id": f"chat-{i}", "messages": [{"role": "user", "content": prompt},
                                                         {"role": "assistant", "content": answer}]})
    rows += [dict(r, id=f"{r['id']}-copy") for r in rows[:5]]  # exact duplicates of the first prompts
    rows += [
        {"id": "chat-refusal", "instruction": "Tell me a joke about volcanoes.", "input": "",
         "output": "As an AI language model, I cannot tell jokes."},
        {"id": "chat-leak", "instruction": LEAKED, "input": "", "output": "Natalia sold 48 + 24 = 72 clips."},
        {"id": "chat-broken-empty", "instruction": "Say something.", "input": "", "output": ""},
        {"id": "chat-broken-roles", "conversations": [{"from": "human", "value": "Hi"}, {"from": "human", "value": "Hi?"},
                                                      {"from": "gpt", "value": "Hello."}]},
    ]
    return [json.dumps(r, ensure_ascii=False) for r in rows]


def _replies(rng: random.Random, topic: str, prefix: str, depth: int) -> list[dict]:
    """2-4 ranked replies (rank 0 best); the best sometimes gets a follow-up question of its own."""
    reps = []
    for r in range(rng.randint(2, 4)):
        node = {"message_id": f"{prefix}-a{r}", "role": "assistant", "rank": r, "deleted": False, "review_result": True,
                "text": _answer(rng, topic) + (" In short: it is simple." if r == 0 else ""), "replies": []}
        if depth == 0 and r == 0 and rng.random() < 0.5:
            node["replies"] = [{"message_id": f"{prefix}-a{r}-q", "role": "prompter", "rank": None, "deleted": False,
                                "review_result": True, "text": f"Tell me more about {topic}.",
                                "replies": _replies(rng, topic, f"{prefix}-a{r}-q", 1)}]
        reps.append(node)
    return reps


def ranked_records(n: int = 60, seed: int = 13) -> list[str]:
    """OpenAssistant-style message trees with ranked replies."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        root = {"message_id": f"tree{i}", "role": "prompter", "rank": None, "deleted": False, "review_result": True,
                "text": rng.choice(STYLES).format(t=topic), "replies": _replies(rng, topic, f"tree{i}", 0)}
        out.append(json.dumps({"message_tree_id": f"tree{i}", "tree_state": "ready_for_export", "prompt": root}))
    return out


def chat_eval_records() -> list[str]:
    """A stand-in evaluation set for the decontamination step of sft-clean's demo run."""
    return [json.dumps({"question": LEAKED, "answer": "72"})]


DEMOS = {"chat": chat_records, "ranked": ranked_records, "chat-eval": chat_eval_records}
