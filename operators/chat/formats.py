"""Read chat data of any common format into the canonical conversation columns, and write them
out as TRL expects. Broken rows (roles not alternating, empty turns, missing fields) go to
quarantine with the reason."""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from thresher.operators.common.chat import (
    READERS,
    ChatFormatError,
    detect,
    from_fields,
    oasst_ranked,
    to_trl,
    turn_text,
)
from thresher.pipeline.columns import FLAGS, LINE, ROWS_TAG, STATS, set_column
from thresher.pipeline.errors import ThresherError, did_you_mean
from thresher.pipeline.ops import Mapper, MapResult, Op, OpParams
from thresher.pipeline.registry import register

TURN = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(TURN)
CANDIDATES = pa.list_(pa.struct([("content", pa.string()), ("rank", pa.int64()), ("score", pa.float64())]))
CANONICAL = {"messages": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "completion": MESSAGES,
             "label": pa.bool_(), "candidates": CANDIDATES}
# source fields a conversion consumes (replaced by the canonical columns)
SOURCE_FIELDS = ("instruction", "input", "output", "history", "system", "conversations", "messages", "chosen",
                 "rejected", "label", "kto_tag", "prompt", "completion")


PROTOCOL = (LINE, STATS, FLAGS, ROWS_TAG)  # the executor's columns: always carried, never listed to users
KEEP_COLUMNS = "user columns to carry through: 'all', or a list of names (a name the input lacks is an error)"


def carried_columns(op: Op, batch: pa.Table, keep: list[str] | str, skip: tuple[str, ...] = (),
                    always: tuple[str, ...] = ()) -> list[str]:
    """The columns of ``batch`` an op carries to its output: ``always`` (where present), the user
    columns ``keep`` picks ('all': every one not in ``skip``, the columns the op consumes or writes)
    and the executor's protocol columns. A name ``keep`` lists that the first batch lacks stops the
    run with one line naming it and the columns there are; later batches without it (a column only
    some rows have) leave it out."""
    names = batch.column_names
    user = [c for c in names if c not in PROTOCOL]
    if keep == "all":
        picked = [c for c in user if c not in skip]
    else:
        missing = [c for c in keep if c not in names]
        if missing and not getattr(op, "_columns_checked", False):
            c = missing[0]
            raise ThresherError(f"{op.ctx.key}: keep_columns names '{c}', but the input has no such column "
                                f"(its columns: {', '.join(user) or 'none'}).{did_you_mean(c, user)}")
        picked = [c for c in keep if c in names]
    op._columns_checked = True
    out = [c for c in always if c in names] + picked + [c for c in names if c in PROTOCOL]
    return list(dict.fromkeys(out))


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
    rejected for DPO), OpenAI messages (with label for KTO), TRL's prompt/chosen/rejected,
    prompt/completion and prompt/completion/label (conversational or plain), HH-RLHF transcripts,
    any two fields (question/answer) and thresher's own canonical and exported rows into
    canonical ``messages`` (+ ``chosen``/``rejected``, ``completion``/``label``, ``candidates``);
    rows with broken structure go to quarantine with the reason."""

    name = "chat_format"
    reads_text = False

    class Params(OpParams):
        source: Literal["auto", "alpaca", "sharegpt", "openai", "trl", "hh_rlhf", "fields"] = Field(
            "auto", description="input format; auto: decided per row from its fields; trl: TRL's prompt/chosen/"
            "rejected, prompt/completion(/label) and implicit-prompt chosen/rejected, conversational or plain; "
            "fields: prompt_field (+ response_field, system_field) make one exchange")
        prompt_field: str | None = Field(None, description="the field holding the user turn (e.g. question); "
                                         "setting it reads every row this way (source: fields; default there: prompt)")
        response_field: str | None = Field("response", description="with source: fields, the assistant turn "
                                           "(e.g. answer; null: prompts only)")
        system_field: str | None = Field(None, description="with source: fields, an optional system message")
        keep_source: bool = Field(False, description="keep the source fields the conversion consumed")
        keep_columns: list[str] | Literal["all"] = Field("all", description=KEEP_COLUMNS + "; the id column "
                                                         "always stays")

        @model_validator(mode="after")
        def _field_mapping(self):
            if self.source == "auto" and self.prompt_field is not None:
                self.source = "fields"
            elif self.source == "fields" and self.prompt_field is None:
                self.prompt_field = "prompt"
            elif self.source != "fields" and (self.prompt_field or self.system_field):
                raise ValueError(f"prompt_field and system_field read rows by field mapping (source: fields), "
                                 f"not source: {self.source}")
            return self

    example = {"source": "auto"}

    def process(self, batch: pa.Table) -> MapResult:
        p = self.params
        cols: dict[str, list] = {c: [] for c in CANONICAL}
        marks: list[str | None] = []
        for row in batch.to_pylist():
            try:
                fmt = detect(row) if p.source == "auto" else p.source
                conv = (from_fields(row, p.prompt_field, p.response_field, p.system_field) if fmt == "fields"
                        else READERS[fmt](row))
                marks.append(None)
            except ChatFormatError as e:
                conv = {}
                marks.append(str(e))
            for c in CANONICAL:
                cols[c].append(conv.get(c))
        consumed = SOURCE_FIELDS
        if p.source == "fields":
            consumed = tuple(c for c in (p.prompt_field, p.response_field, p.system_field) if c)
        drop = tuple(c for c in consumed if c in CANONICAL or not p.keep_source)
        keep = carried_columns(self, batch, p.keep_columns, skip=drop, always=(self.ctx.id_key,))
        kept = batch.select([c for c in batch.column_names if c in keep or c in CANONICAL])
        return MapResult(with_columns(kept, drop, cols, CANONICAL), quarantine=marks)


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
    or plain text; rows without what the format needs go to quarantine. Plain text writes every
    prompt as an HH-style transcript ending with '\\n\\nAssistant:' (a system message before it) and
    every reply with a leading space, so prompt + reply is the whole transcript."""

    name = "chat_export"
    reads_text = False

    class Params(OpParams):
        to: Literal["sft", "dpo", "kto"] = Field("sft", description="TRL dataset type")
        style: Literal["conversational", "plain"] = Field("conversational", description="lists of messages, or text "
                                                          "(prompt: HH-style transcript ending '\\n\\nAssistant:'; "
                                                          "reply: a leading space, then the text)")
        keep_columns: list[str] | Literal["all"] | None = Field(
            None, description=KEEP_COLUMNS + " ('all': every column but the canonical ones); default: the id column")

    example = {"to": "dpo", "style": "conversational"}

    NEEDS = {"sft": ("messages",), "dpo": ("messages", "chosen", "rejected"), "kto": ("messages", "completion", "label")}
    WRITES = {"sft": ("messages",), "dpo": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion", "label")}

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
        keep = p.keep_columns if p.keep_columns is not None else [self.ctx.id_key]
        cols = carried_columns(self, batch, keep, skip=(*CANONICAL, *self.WRITES[p.to]))
        table = batch.select([c for c in cols if c not in self.WRITES[p.to]])
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
