"""Global candidate ops: gather scored answers spread over rows into one row per prompt, and
length-controlled scores (the answer-length effect regressed out over the whole corpus)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import xxhash
from pydantic import Field

from thresher.operators.chat.formats import CANDIDATES, MESSAGES
from thresher.pipeline.columns import ROW, SHARD, drop_decisions, no_decisions, set_column, state_rows
from thresher.pipeline.errors import ThresherError, did_you_mean
from thresher.pipeline.ops import GlobalOp, OpParams, Resources
from thresher.pipeline.registry import register


def _prompt_keys(batch: pa.Table, group_by: list[str] = ()) -> np.ndarray:
    """A 64-bit key of each row's conversation before its last answer, and of its ``group_by`` values."""
    convs = batch.column("messages").to_pylist()
    extra = [batch.column(c).to_pylist() if c in batch.column_names else [None] * batch.num_rows for c in group_by]
    keys = []
    for i, c in enumerate(convs):
        c = c or []
        prompt = c[:-1] if c and c[-1]["role"] == "assistant" else c
        text = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in prompt)
        if extra:
            text += "\x1d" + json.dumps([col[i] for col in extra], default=str, ensure_ascii=False)
        keys.append(xxhash.xxh3_64_intdigest(text.encode()))
    return np.array(keys, dtype=np.uint64)


@register
class GroupCandidates(GlobalOp):
    """Rows that share a prompt and each carry one scored answer (the last assistant turn, score in
    ``score_column``) become one row per prompt: the prompt in ``messages`` and every answer in
    ``candidates`` (first row in input order kept; the others dropped as ``merged_into_prompt_row``).
    Then ``preference_pairs`` pairs them. By default a group is every row of the whole input with
    the same prompt (the conversation before the last answer, exactly), whichever comparison it
    came from; ``group_by`` adds columns to the key (e.g. ``[comparison_id]``), so that separate
    comparisons of one prompt stay separate and no pair mixes answers nobody compared."""

    name = "candidates_group"
    aliases = ("group_candidates",)
    reads_text = False
    resources = Resources(cpus=1.0, memory_mb=1024)
    metrics = {"prompts": "prompts with two or more answers"}

    class Params(OpParams):
        score_column: str | None = Field("score", description="numeric score per row (null: no scores)")
        rank_column: str | None = Field(None, description="or a rank per row (lower is better)")
        group_by: list[str] = Field(default_factory=list, description="columns that, with the prompt, make the "
                                    "group key (e.g. [comparison_id]); default []: the prompt alone")

    example = {"score_column": "score", "group_by": ["comparison_id"]}

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        p = self.params
        missing = [c for c in p.group_by if c not in batch.column_names]
        if missing and not getattr(self, "_columns_checked", False):
            have = [c for c in batch.column_names if not c.startswith("__")]
            raise ThresherError(f"{self.ctx.key}: group_by names '{missing[0]}', but the input has no such column "
                                f"(its columns: {', '.join(have)}).{did_you_mean(missing[0], have)}")
        self._columns_checked = True
        answer = [m[-1]["content"] if m and m[-1]["role"] == "assistant" else None
                  for m in batch.column("messages").to_pylist()]

        def col(name):
            return batch.column(name).cast(pa.float64()) if name and name in batch.column_names else pa.nulls(batch.num_rows, pa.float64())

        return pa.table({"key": _prompt_keys(batch, p.group_by), "answer": pa.array(answer, pa.string()),
                         "score": col(p.score_column), "rank": col(p.rank_column)})

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        df = fingerprints.sort([SHARD, ROW]).collect()
        first = df.group_by("key", maintain_order=True).agg(
            pl.col(SHARD).first(), pl.col(ROW).first(),
            pl.struct(pl.col("answer").alias("content"), pl.col("rank").cast(pl.Int64), pl.col("score")).alias("candidates"),
            pl.len().alias("n"))
        self.record("prompts", first.filter(pl.col("n") > 1).height)
        self.state = first.select(SHARD, ROW, "candidates")
        keep = first.select(SHARD, ROW)
        return drop_decisions(df.join(keep, on=[SHARD, ROW], how="anti"), "merged_into_prompt_row")

    def apply(self, batch: pa.Table, shard: int, rows: np.ndarray):
        st, pos = state_rows(self.state, shard, rows)
        out_c = [None] * len(rows)
        for i, c in zip(pos, st["candidates"].to_list(), strict=True):
            out_c[i] = c
        msgs = batch.column("messages").to_pylist()
        prompts = [m[:-1] if m and m[-1]["role"] == "assistant" else m for m in msgs]
        out = set_column(batch, "messages", pa.array(prompts, MESSAGES))
        return set_column(out, "candidates", pa.array(out_c, CANDIDATES))


@register
class LengthControlledScores(GlobalOp):
    """Regress candidate scores on answer length over the whole corpus and remove the length effect:
    lc_score = score - b * (log(words) - mean log(words)), b from least squares — the correction
    length-controlled AlpacaEval applies to judge preferences (Dubois et al., 2024), for scores.
    Rewrites each candidate's ``score`` (the originals go to the row's ``raw_scores``) so
    ``preference_pairs`` pairs on the controlled value."""

    name = "length_controlled_scores"
    reads_text = False
    resources = Resources(cpus=1.0, memory_mb=512)
    metrics = {"slope_milli": "score change per unit of log(words), x1000"}

    class Params(OpParams):
        candidates_key: str = Field("candidates", description="column of {content, rank, score} lists")

    example: dict = {}

    def fingerprint(self, batch: pa.Table) -> pa.Table:
        cands = batch.column(self.params.candidates_key).to_pylist()
        scores = [[c.get("score") for c in cs or []] for cs in cands]
        words = [[len((c.get("content") or "").split()) for c in cs or []] for cs in cands]
        return pa.table({"scores": pa.array(scores, pa.list_(pa.float64())), "words": pa.array(words, pa.list_(pa.int64()))})

    def resolve(self, fingerprints: pl.LazyFrame) -> pl.DataFrame:
        pts = fingerprints.select(pl.col("scores").explode(), pl.col("words").explode()).drop_nulls().collect()
        x = np.log1p(pts["words"].to_numpy().astype(np.float64))
        y = pts["scores"].to_numpy().astype(np.float64)
        slope, mean_x = 0.0, float(x.mean()) if len(x) else 0.0
        if len(x) > 2 and x.var() > 0:
            slope = float(np.cov(x, y, bias=True)[0, 1] / x.var())
        self.record("slope_milli", round(slope * 1000))
        self.state = pl.DataFrame({"slope": [slope], "mean_x": [mean_x]})
        return no_decisions()

    def apply(self, batch: pa.Table, shard: int, rows: np.ndarray):
        slope, mean_x = float(self.state["slope"][0]), float(self.state["mean_x"][0])
        key = self.params.candidates_key
        cands = batch.column(key).to_pylist()
        out = []
        for cs in cands:
            row = []
            for c in cs or []:
                s = c.get("score")
                if s is not None:
                    s = s - slope * (np.log1p(len((c.get("content") or "").split())) - mean_x)
                row.append(dict(c, score=None if s is None else float(s)))
            out.append(row if cs is not None else None)
        raw = pa.array([[c.get("score") for c in cs or []] for cs in cands], pa.list_(pa.float64()))
        return set_column(set_column(batch, key, pa.array(out, CANDIDATES)), "raw_scores", raw)
