"""Chat data formats <-> one canonical conversation.

Canonical form (the columns chat ops read and write):

- ``messages``: list of ``{"role", "content"}``, roles ``system`` (first only), ``user``,
  ``assistant``, ``tool``; user and assistant alternate. SFT rows end with an assistant turn;
  preference and KTO rows hold only the prompt (ending with a user turn).
- ``chosen`` / ``rejected``: the preferred and dispreferred replies (lists of messages).
- ``completion`` + ``label``: KTO.
- ``candidates``: ranked or scored replies, ``{"content", "rank", "score"}``.

Readers raise ``ChatFormatError`` with a reason for a row whose structure is broken (roles not
alternating, empty turns, missing fields); the op sends such rows to quarantine. Every reader
checks the same rules (``check``, ``check_reply``), so whatever one writes, canonical or exported
(``to_trl``), another reads back (``from_openai`` reads canonical rows, ``from_trl`` TRL's). Conversions are
per row in Python: they reshape nested lists, which no column kernel expresses, and chat sets
are small next to pretraining text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "system": "system", "observation": "tool", "tool": "tool",
                  "function_call": "assistant", "function": "tool"}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


class ChatFormatError(ValueError):
    """A row whose structure cannot be read; the message is the quarantine reason."""


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


# ---------------------------------------------------------------------------------- validation
def check(messages: list[dict], ends_with: str | None = "assistant") -> list[dict]:
    """Validate a conversation; returns it, or raises ChatFormatError naming the first problem."""
    if not messages:
        raise ChatFormatError("empty conversation")
    prev = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatFormatError(f"malformed turn (turn {i} needs role and content)")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ChatFormatError(f"unknown role (turn {i}: {role!r})")
        if role == "system" and i != 0:
            raise ChatFormatError(f"misplaced system message (turn {i}; only the first turn may be system)")
        if not isinstance(content, str) or not content.strip():
            raise ChatFormatError(f"empty turn (turn {i}, {role})")
        if role in ("user", "assistant") and prev == role:
            raise ChatFormatError(f"roles not alternating (turns {i - 1} and {i} are both {role})")
        if role == "assistant" and prev in (None, "system"):
            raise ChatFormatError(f"starts with an assistant turn (turn {i})")
        if role != "tool":
            prev = role
    if ends_with and messages[-1]["role"] != ends_with and not (ends_with == "assistant" and messages[-1]["role"] == "tool"):
        raise ChatFormatError(f"wrong last turn (the last turn is {messages[-1]['role']}, expected {ends_with})")
    return messages


def _field(row: dict, name: str):
    if name not in row or row[name] is None:
        raise ChatFormatError(f"missing field ({name})")
    return row[name]


# ---------------------------------------------------------------------------------- readers
def from_alpaca(row: dict) -> dict:
    """instruction, input, output, [history: [[q, a], ...]], [system] (as LLaMA-Factory reads it:
    the prompt is the instruction, then a newline and the input when there is one)."""
    instruction = _field(row, "instruction")
    extra = row.get("input") or ""
    prompt = f"{instruction}\n{extra}" if extra else instruction
    messages = [msg("system", row["system"])] if row.get("system") else []
    for pair in row.get("history") or []:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ChatFormatError("malformed history (entries must be [question, answer] pairs)")
        messages += [msg("user", pair[0]), msg("assistant", pair[1])]
    messages.append(msg("user", prompt))
    output = row.get("output")
    if isinstance(output, list):  # ranked alpaca: several outputs, best first
        return {"messages": check(messages, "user"), "candidates": [{"content": o, "rank": i, "score": None}
                                                                     for i, o in enumerate(output)]}
    messages.append(msg("assistant", _field(row, "output")))
    return {"messages": check(messages)}


def _sharegpt_turns(turns, where: str) -> list[dict]:
    if not isinstance(turns, list):
        raise ChatFormatError(f"malformed turns ('{where}' is not a list)")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise ChatFormatError(f"malformed turn ({where} turn {i} needs 'from' and 'value')")
        role = SHAREGPT_ROLES.get(str(t["from"]).lower())
        if role is None:
            raise ChatFormatError(f"unknown role ({where} turn {i}: {t['from']!r})")
        out.append(msg(role, t["value"]))
    return out


def from_sharegpt(row: dict) -> dict:
    """conversations: [{from, value}], [system]; with chosen/rejected ({from, value}) a DPO row."""
    messages = _sharegpt_turns(_field(row, "conversations"), "conversations")
    if row.get("system") and (not messages or messages[0]["role"] != "system"):
        messages.insert(0, msg("system", row["system"]))
    if _has(row, "chosen") or _has(row, "rejected"):
        chosen = _sharegpt_turns([_field(row, "chosen")], "chosen")
        rejected = _sharegpt_turns([_field(row, "rejected")], "rejected")
        return {"messages": check(messages, "user"), "chosen": check_reply(chosen), "rejected": check_reply(rejected)}
    return {"messages": check(messages)}


def read_turns(value, where: str) -> list[dict]:
    """A list of ``{role, content}`` turns as canonical messages (other keys left out)."""
    if not isinstance(value, list):
        raise ChatFormatError(f"malformed turns ('{where}' is not a list of messages)")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatFormatError(f"malformed turn ({where} turn {i} needs role and content)")
        out.append(msg(m["role"], m["content"]))
    return out


def _label(row: dict) -> bool:
    label = row.get("label", row.get("kto_tag"))
    if not isinstance(label, bool):
        raise ChatFormatError("bad KTO label (must be true or false)")
    return label


def read_reply(value, where: str) -> list[dict]:
    """A reply: a list of assistant turns, or text (TRL's plain style: one leading space, which
    separates it from the prompt it follows, is not part of the reply)."""
    if isinstance(value, str):
        return check_reply([msg("assistant", value[1:] if value.startswith(" ") else value)])
    return check_reply(read_turns(value, where))


def _candidates(value) -> list[dict]:
    if not isinstance(value, list) or any(not isinstance(c, dict) or not isinstance(c.get("content"), str) for c in value):
        raise ChatFormatError("malformed candidates (a list of {content, rank, score} is needed)")
    return [{"content": c["content"], "rank": c.get("rank"), "score": c.get("score")} for c in value]


def _has(row: dict, name: str) -> bool:
    return row.get(name) is not None


def from_openai(row: dict) -> dict:
    """messages: [{role, content}] (OpenAI / TRL conversational); with ``label`` a KTO row whose last
    assistant turn is the completion. Canonical rows read as they are: ``messages`` (the prompt)
    with ``chosen``/``rejected`` (DPO), with ``completion`` and ``label`` (KTO), or with
    ``candidates`` (ranked or scored replies)."""
    messages = read_turns(_field(row, "messages"), "messages")
    if _has(row, "chosen") or _has(row, "rejected"):
        return {"messages": check(messages, "user"), "chosen": read_reply(_field(row, "chosen"), "chosen"),
                "rejected": read_reply(_field(row, "rejected"), "rejected")}
    if _has(row, "completion"):
        return {"messages": check(messages, "user"), "completion": read_reply(row["completion"], "completion"),
                "label": _label(row)}
    if _has(row, "candidates"):
        return {"messages": check(messages, "user"), "candidates": _candidates(row["candidates"])}
    if _has(row, "label") or _has(row, "kto_tag"):
        label = _label(row)
        check(messages)
        return {"messages": messages[:-1], "completion": messages[-1:], "label": label}
    return {"messages": check(messages)}


def from_trl(row: dict) -> dict:
    """TRL's dataset types, conversational (lists of messages) or plain (text): ``prompt`` with
    ``chosen``/``rejected`` (preference), with ``completion`` and ``label`` (KTO), with
    ``completion`` alone (prompt-completion SFT), or alone (prompt-only); and ``chosen``/
    ``rejected`` without a prompt (implicit prompt: the turns both share). A plain prompt in
    thresher's transcript form (``render_plain``) reads back turn by turn; other text is one user turn."""
    if not _has(row, "prompt"):
        return _implicit_prompt(row)
    prompt = row["prompt"]
    if isinstance(prompt, str):
        messages = parse_plain_prompt(prompt)
    else:
        messages = check(read_turns(prompt, "prompt"), "user")
    if _has(row, "chosen") or _has(row, "rejected"):
        return {"messages": messages, "chosen": read_reply(_field(row, "chosen"), "chosen"),
                "rejected": read_reply(_field(row, "rejected"), "rejected")}
    if _has(row, "label"):
        return {"messages": messages, "completion": read_reply(_field(row, "completion"), "completion"), "label": _label(row)}
    if _has(row, "completion"):
        return {"messages": check(messages + read_reply(row["completion"], "completion"))}
    return {"messages": messages}


def _implicit_prompt(row: dict) -> dict:
    """chosen and rejected conversations that share everything before their replies."""
    chosen, rejected = _field(row, "chosen"), _field(row, "rejected")
    if isinstance(chosen, str) and isinstance(rejected, str):
        return from_hh(row)
    chosen, rejected = read_turns(chosen, "chosen"), read_turns(rejected, "rejected")
    k = 0
    while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
        k += 1
    while k and chosen[k - 1]["role"] == "assistant":  # a reply starts after the last shared user turn
        k -= 1
    if not k:
        raise ChatFormatError("prompts differ (chosen and rejected share no prompt)")
    return {"messages": check(chosen[:k], "user"), "chosen": check_reply(chosen[k:]),
            "rejected": check_reply(rejected[k:])}


def check_reply(reply: list[dict]) -> list[dict]:
    if not reply or any(m["role"] != "assistant" for m in reply):
        raise ChatFormatError("bad reply (a reply must be assistant turns)")
    for m in reply:
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise ChatFormatError("empty turn (reply)")
    return reply


def parse_hh(transcript: str) -> list[dict]:
    """An Anthropic HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as turns."""
    if not isinstance(transcript, str):
        raise ChatFormatError("bad transcript (not text)")
    parts = HH_TURN.split(transcript)
    if parts[0] != "" or len(parts) < 3:
        raise ChatFormatError("bad transcript (does not start with '\\n\\nHuman: ')")
    return [msg("user" if who == "Human" else "assistant", content) for who, content in zip(parts[1::2], parts[2::2], strict=True)]


def from_hh(row: dict) -> dict:
    """chosen and rejected transcripts sharing everything before the last assistant turn."""
    chosen, rejected = parse_hh(_field(row, "chosen")), parse_hh(_field(row, "rejected"))
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise ChatFormatError("bad transcript (does not end with an Assistant turn)")
    if chosen[:-1] != rejected[:-1]:
        raise ChatFormatError("prompts differ (chosen and rejected differ before the last Assistant turn)")
    prompt = chosen[:-1]
    if not prompt or prompt[-1]["role"] != "user":
        raise ChatFormatError("bad transcript (no Human turn before the replies)")
    return {"messages": check(prompt, "user"), "chosen": check_reply(chosen[-1:]), "rejected": check_reply(rejected[-1:])}


def to_hh(messages: list[dict], reply: list[dict]) -> str:
    """The exact HH transcript text: every turn prefixed with '\\n\\nHuman: ' or '\\n\\nAssistant: '."""
    return "".join(("\n\nHuman: " if m["role"] == "user" else "\n\nAssistant: ") + m["content"] for m in messages + reply)


def oasst_ranked(tree: dict) -> Iterator[dict]:
    """OpenAssistant message trees -> one row per prompter message with two or more ranked
    assistant replies: the conversation up to it, and the replies as candidates (rank 0 = best).
    Deleted and unreviewed messages are skipped, as OpenAssistant's own exports do."""
    root = tree.get("prompt", tree)

    def walk(node: dict, path: list[dict]):
        if node.get("deleted") or node.get("review_result") is False:
            return
        role = "user" if node.get("role") == "prompter" else "assistant"
        here = path + [msg(role, node.get("text", ""))]
        replies = [r for r in node.get("replies") or [] if not r.get("deleted") and r.get("review_result") is not False]
        if role == "user":
            ranked = [r for r in replies if r.get("role") == "assistant" and r.get("rank") is not None]
            if len(ranked) >= 2:
                yield {"messages": here, "candidates": [{"content": r["text"], "rank": int(r["rank"]), "score": None}
                                                        for r in sorted(ranked, key=lambda r: r["rank"])],
                       "source_id": node.get("message_id")}
        for r in replies:
            yield from walk(r, here)

    yield from walk(root, [])


# ---------------------------------------------------------------------------------- writers
PLAIN_PROMPT_END = "\n\nAssistant:"


def render_plain(messages: list[dict]) -> str:
    """A prompt as plain text, always the same way: the HH-RLHF transcript ('\\n\\nHuman: ...' and
    '\\n\\nAssistant: ...' turns), one turn or many, ending with '\\n\\nAssistant:'; a system
    message comes first, as the text before the first '\\n\\nHuman: '. The reply follows with a
    leading space (``plain_reply``), so prompt + chosen is the whole transcript, as in Anthropic's
    HH-RLHF and TRL's plain ("standard") preference and prompt-completion examples."""
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    turns = [m for m in messages if m["role"] != "system"]
    return system + to_hh(turns, []) + PLAIN_PROMPT_END


def plain_reply(reply: list[dict]) -> str:
    """A reply as the text that follows a plain prompt: a space, then its turns joined by newlines."""
    return " " + "\n".join(m["content"] for m in reply)


def parse_plain_prompt(text) -> list[dict]:
    """A plain prompt as turns: a transcript as ``render_plain`` writes it (or any HH-style one)
    turn by turn, the text before its first '\\n\\nHuman: ' as the system message; any other
    text is one user turn."""
    if not isinstance(text, str):
        raise ChatFormatError("bad prompt (not text)")
    ended = text.endswith(PLAIN_PROMPT_END)
    body = text[: -len(PLAIN_PROMPT_END)] if ended else text
    start = body.find("\n\nHuman: ")
    if start < 0 or (start > 0 and not ended):  # not a transcript: the whole text is the user's
        return check([msg("user", text)], "user")
    system = body[:start]
    messages = ([msg("system", system)] if system.strip() else []) + parse_hh(body[start:])
    return check(messages, "user")


def to_trl(row: dict, kind: str, style: str = "conversational") -> dict:
    """A canonical row -> TRL's SFT (messages), DPO (prompt/chosen/rejected) or KTO
    (prompt/completion/label) columns."""
    if kind == "sft":
        return {"messages": row["messages"]}
    if kind == "dpo":
        if style == "plain":
            return {"prompt": render_plain(row["messages"]), "chosen": plain_reply(row["chosen"]),
                    "rejected": plain_reply(row["rejected"])}
        return {"prompt": row["messages"], "chosen": row["chosen"], "rejected": row["rejected"]}
    if kind == "kto":
        if style == "plain":
            return {"prompt": render_plain(row["messages"]), "completion": plain_reply(row["completion"]),
                    "label": row["label"]}
        return {"prompt": row["messages"], "completion": row["completion"], "label": row["label"]}
    raise ValueError(f"unknown TRL format {kind!r}")


def detect(row: dict) -> str:
    """Which reader a row needs, from the fields it has (null fields do not count: a file mixing
    formats gives every row every field)."""
    has = {k for k, v in row.items() if v is not None}
    if "instruction" in has:
        return "alpaca"
    if "conversations" in has:
        return "sharegpt"
    if "messages" in has:
        return "openai"
    if "prompt" in has:
        return "trl"
    if isinstance(row.get("chosen"), str) and isinstance(row.get("rejected"), str) and row["chosen"].startswith("\n\nHuman:"):
        return "hh_rlhf"
    if isinstance(row.get("chosen"), list) and isinstance(row.get("rejected"), list):
        return "trl"  # implicit prompt
    raise ChatFormatError(f"unknown chat format (fields {sorted(has)})")


def turn_text(messages, roles: tuple[str, ...], joiner: str = "\n"):
    """Per row, the contents of the turns with these roles joined (a string column; "" when none).
    Vectorised with polars: explode the turns, filter by role, join per row."""
    import polars as pl
    import pyarrow as pa

    n = len(messages)
    df = pl.from_arrow(pa.table({"m": messages})).with_row_index("i").explode("m").unnest("m")
    if "role" not in df.columns:  # every conversation empty or null
        return pa.array([""] * n, pa.string())
    got = (df.filter(pl.col("role").is_in(list(roles))).group_by("i", maintain_order=True)
           .agg(pl.col("content").fill_null("").str.join(joiner)))
    full = pl.DataFrame({"i": pl.arange(0, n, eager=True).cast(pl.UInt32)}).join(got, on="i", how="left")
    return full["content"].fill_null("").to_arrow()


def from_fields(row: dict, prompt: str, response: str | None, system: str | None = None) -> dict:
    """Any two fields as one exchange (e.g. GSM8K's question and answer), with an optional third
    as the system message (left out where it is null or empty)."""
    messages = [msg("system", row[system])] if system and row.get(system) else []
    messages.append(msg("user", _field(row, prompt)))
    if response:
        messages.append(msg("assistant", _field(row, response)))
        return {"messages": check(messages)}
    return {"messages": check(messages, "user")}


READERS = {"alpaca": from_alpaca, "sharegpt": from_sharegpt, "openai": from_openai, "trl": from_trl, "hh_rlhf": from_hh}
