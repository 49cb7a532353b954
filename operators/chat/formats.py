"""Read chat data of any common format into the canonical conversation columns, and write them
out as TRL expects. Broken rows (roles not alternating, empty turns, missing fields) go to
quarantine with the reason."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field

from thresher.operators.common.chat import (
    READERS,
    ChatFormatError,
    detect,
    from_fields,
    oasst_ranked,
    to_trl,
    turn_text,
)
from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, MapResult, OpParams
from thresher.pipeline.registry import register

TURN = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(TURN)
CANDIDATES = pa.list_(pa.struct([("content", pa.string()), ("rank", pa.int64()), ("score", pa.float64())]))
CANONICAL = {"messages": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "completion": MESSAGES,
             "label": pa.bool_(), "candidates": CANDIDATES}
# source fields a conversion consumes (replaced by the canonical columns)
SOURCE_FIELDS = ("instruction", "input", "output", "history", "system", "conversations", "messages", "chosen",
                 "rejected", "label", "kto_tag", "prompt", "completion")


def with_columns(batch: pa.Table, drop: tuple[str, ...], columns: dict[str, list], types: dict[str, pa.DataType]) -> pa.Table:
    """``batch`` without ``drop``, plus ``columns`` (only those with a value in some row)."""
    out = batch.drop_columns([c for c in drop if c in batch.column_names])
    for name, values in columns.items():
        if any(v is not None for v in values):
            if name in out.column_names:
                out = out.drop_columns([name])
            out = out.append_column(name, pa.array(values, types[name]))
    return out


@register
class ChatFormat(Mapper):
    """Convert alpaca (instruction/input/output/history), ShareGPT (conversations, with chosen/
    rejected for DPO), OpenAI/TRL messages (with label for KTO) and HH-RLHF transcripts into
    canonical ``messages`` (+ ``chosen``/``rejected``, ``completion``/``label``, ``candidates``);
    rows with broken structure go to quarantine with the reason."""

    name = "chat_format"
    reads_text = False

    class Params(OpParams):
        source: Literal["auto", "alpaca", "sharegpt", "openai", "hh_rlhf", "fields"] = Field(
            "auto", description="input format; auto: decided per row from its fields; fields: prompt_field and "
            "response_field make one exchange")
        prompt_field: str = Field("prompt", description="with source: fields, the user turn")
        response_field: str | None = Field("response", description="with source: fields, the assistant turn "
                                           "(null: prompts only)")
        keep_source: bool = Field(False, description="keep the source fields the conversion consumed")

    example = {"source": "auto"}

    def process(self, batch: pa.Table) -> MapResult:
        cols: dict[str, list] = {c: [] for c in CANONICAL}
        marks: list[str | None] = []
        for row in batch.to_pylist():
            try:
                fmt = detect(row) if self.params.source == "auto" else self.params.source
                conv = (from_fields(row, self.params.prompt_field, self.params.response_field) if fmt == "fields"
                        else READERS[fmt](row))
                marks.append(None)
            except ChatFormatError as e:
                conv = {}
                marks.append(str(e))
            for c in CANONICAL:
                cols[c].append(conv.get(c))
        consumed = SOURCE_FIELDS
        if self.params.source == "fields":
            consumed = (self.params.prompt_field,) + ((self.params.response_field,) if self.params.response_field else ())
        drop = tuple(c for c in consumed if c in CANONICAL or not self.params.keep_source)
        return MapResult(with_columns(batch, drop, cols, CANONICAL), quarantine=marks)


@register
class OasstRanked(Mapper):
    """OpenAssistant message trees (one tree per row) -> one row per prompt with two or more
    ranked assistant replies: the conversation so far in ``messages`` and the replies, best first,
    in ``candidates`` (rank 0 = best), ready for ``preference_pairs``."""

    name = "oasst_ranked"
    reads_text = False
    one_to_many = True

    class Params(OpParams):
        pass

    example: dict = {}

    def process(self, batch: pa.Table) -> pa.Table:
        trees = batch.column("message_tree_id").to_pylist() if "message_tree_id" in batch.column_names else None
        rows, tree_ids = [], []
        for i, tree in enumerate(batch.to_pylist()):
            for r in oasst_ranked(tree):
                rows.append(r)
                tree_ids.append(trees[i] if trees else None)
        return pa.table({"id": pa.array([r["source_id"] for r in rows], pa.string()),
                         "message_tree_id": pa.array(tree_ids, pa.string()),
                         "messages": pa.array([r["messages"] for r in rows], MESSAGES),
                         "candidates": pa.array([r["candidates"] for r in rows], CANDIDATES)})


@register
class ChatExport(Mapper):
    """Write canonical rows as TRL datasets: SFT (``messages``), DPO (``prompt``/``chosen``/
    ``rejected``) or KTO (``prompt``/``completion``/``label``), conversational (lists of messages)
    or plain text; rows without what the format needs go to quarantine."""

    name = "chat_export"
    reads_text = False

    class Params(OpParams):
        to: Literal["sft", "dpo", "kto"] = Field("sft", description="TRL dataset type")
        style: Literal["conversational", "plain"] = Field("conversational", description="lists of messages, or text")
        keep_columns: list[str] = Field(default_factory=lambda: ["id"], description="other columns to keep")

    example = {"to": "dpo", "style": "conversational"}

    NEEDS = {"sft": ("messages",), "dpo": ("messages", "chosen", "rejected"), "kto": ("messages", "completion", "label")}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        need = self.NEEDS[p.to]
        rows = batch.to_pylist()
        out: dict[str, list] = {}
        marks: list[str | None] = []
        for row in rows:
            missing = [c for c in need if row.get(c) is None]
            if missing:
                marks.append(f"not a {p.to} row (no {', '.join(missing)})")
                conv = {}
            else:
                marks.append(None)
                conv = to_trl(row, p.to, p.style)
            for k in dict.fromkeys([*out, *conv]):  # first-seen order: the same columns in the same order everywhere
                out.setdefault(k, [None] * (len(marks) - 1)).append(conv.get(k))
        text = p.style == "plain"
        types = {"messages": MESSAGES, "prompt": pa.string() if text else MESSAGES,
                 "chosen": pa.string() if text else MESSAGES, "rejected": pa.string() if text else MESSAGES,
                 "completion": pa.string() if text else MESSAGES, "label": pa.bool_()}
        keep = [c for c in p.keep_columns if c in batch.column_names]
        table = batch.select(keep)
        for name, values in out.items():
            table = table.append_column(name, pa.array(values, types[name]))
        return MapResult(table, quarantine=marks)


@register
class ChatText(Mapper):
    """Write the text of some turns (by default the user's) to a column, so text ops can work on
    chat rows: deduplicate prompts with ``exact_dedup``/``minhash_dedup`` ``field: prompt_text``,
    or filter on it."""

    name = "chat_text"
    reads_text = False

    class Params(OpParams):
        roles: list[Literal["system", "user", "assistant", "tool"]] = Field(default_factory=lambda: ["user"],
                                                                          description="turns to take")
        column: str = Field("prompt_text", description="column to write")

    example = {"roles": ["user"], "column": "prompt_text"}

    def process(self, batch: pa.Table) -> pa.Table:
        text = turn_text(batch.column("messages"), tuple(self.params.roles))
        return set_column(batch, self.params.column, text)
