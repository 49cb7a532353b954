"""Filters for SFT and preference rows: prompt/response length in tokens, refusals and
assistant boilerplate, and decontamination against an evaluation set."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.chat import turn_text
from thresher.operators.common.minhash import word_ngram_hashes
from thresher.operators.filter.langid import load_fasttext, one_line, predict_top
from thresher.pipeline.assets import LID176, asset_path
from thresher.pipeline.columns import bounds_masks, over, under
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.io.side_files import read_side_file
from thresher.pipeline.ops import Filter, OpParams, Resources
from thresher.pipeline.registry import register
from thresher.pipeline.tokenizers import token_counter

PROMPT_ROLES = ("system", "user")
REPLY_ROLES = ("assistant",)


def _replies(batch: pa.Table) -> pa.Array:
    """What the assistant says: the conversation's assistant turns, plus chosen/completion replies."""
    parts = [turn_text(batch.column("messages"), REPLY_ROLES)]
    for col in ("chosen", "completion"):
        if col in batch.column_names:
            parts.append(turn_text(batch.column(col), REPLY_ROLES))
    out = parts[0]
    for p in parts[1:]:
        out = pc.binary_join_element_wise(out, p, "\n")
    return out


@register
class ChatLengthFilter(Filter):
    """Prompt (system and user turns) and response (assistant turns) lengths in tokens
    (tiktoken cl100k_base offline, or a tokenizer.json), kept within bounds."""

    name = "chat_length_filter"
    reads_text = False
    stats = {"prompt_tokens": "tokens in system and user turns", "response_tokens": "tokens in assistant turns"}
    bounds = {"prompt_tokens": ("min_prompt_tokens", "max_prompt_tokens"),
              "response_tokens": ("min_response_tokens", "max_response_tokens")}

    class Params(OpParams):
        min_prompt_tokens: int = Field(1, ge=0, description="fewest tokens in the system and user turns")
        max_prompt_tokens: int | None = Field(None, ge=1, description="most tokens in the system and user turns")
        min_response_tokens: int = Field(1, ge=0, description="fewest tokens in the assistant turns")
        max_response_tokens: int | None = Field(None, ge=1, description="most tokens in the assistant turns")
        tokenizer: str = Field("cl100k_base", description="cl100k_base (offline) or a tokenizer.json path")

    example = {"min_response_tokens": 5, "max_response_tokens": 4096}

    def compute_stats(self, batch: pa.Table) -> dict:
        counter = token_counter(self.params.tokenizer)
        prompt = turn_text(batch.column("messages"), PROMPT_ROLES).to_pylist()
        reply = _replies(batch).to_pylist()
        return {"prompt_tokens": counter.count(prompt), "response_tokens": counter.count(reply)}

    def drop_reasons(self, stats: dict) -> dict:
        p = self.params
        prompt_short, prompt_long = bounds_masks(stats["prompt_tokens"], p.min_prompt_tokens, p.max_prompt_tokens)
        reply_short, reply_long = bounds_masks(stats["response_tokens"], p.min_response_tokens, p.max_response_tokens)
        return {"prompt_too_short": prompt_short, "response_too_short": reply_short,
                "prompt_too_long": prompt_long, "response_too_long": reply_long}


# Phrases of assistants that refuse or talk about being a model, as Data-Juicer's and the
# "unfiltered" Alpaca/ShareGPT cleaning lists use them (lower case, matched anywhere).
REFUSALS = [
    "as an ai language model", "as a language model", "as an ai assistant", "as a large language model",
    "i'm sorry, but i cannot", "i am sorry, but i cannot", "i'm sorry, but as an ai", "i cannot fulfill",
    "i can't fulfill", "i'm unable to", "i am unable to", "i cannot provide", "i can't provide",
    "i'm not able to provide", "i cannot assist", "i can't assist", "i cannot help with", "i can't help with",
    "my programming", "openai's content policy", "against my guidelines", "i do not have personal opinions",
    "i don't have personal opinions", "i'm just an ai", "i am just an ai",
]


@register
class RefusalFilter(Filter):
    """Drop rows whose assistant turns refuse or talk about being an AI ("As an AI language
    model ...", "I'm sorry, but I cannot ..."); the phrase list is replaceable."""

    name = "refusal_filter"
    reads_text = False
    stats = {"refusal_phrases": "refusal/boilerplate phrases found in the assistant turns"}
    bounds = {"refusal_phrases": (None, "max_phrases")}

    class Params(OpParams):
        phrases: list[str] = Field(default_factory=lambda: list(REFUSALS), description="lower-case phrases")
        max_phrases: int = Field(0, ge=0, description="drop rows with more than this many")

    example = {"max_phrases": 0}

    def setup(self) -> None:
        self._pattern = "|".join(re.escape(p.lower()) for p in self.params.phrases) or "(?!)"

    def compute_stats(self, batch: pa.Table) -> dict:
        text = pc.utf8_lower(_replies(batch))
        return {"refusal_phrases": pc.count_substring_regex(text, self._pattern)}

    def drop_reasons(self, stats: dict) -> dict:
        return {"refusal_or_boilerplate": over(stats["refusal_phrases"], self.params.max_phrases)}


def _normalised(text: pa.Array) -> pa.Array:
    """Lower case, punctuation and symbols as spaces (how GPT-3's contamination check compared text)."""
    return pc.replace_substring_regex(pc.utf8_lower(text), r"[\p{P}\p{S}]+", " ")


def _ngram_sets(text: pa.Array, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat word n-gram hashes, per-row counts); a row shorter than n words is one n-gram of all of them."""
    return word_ngram_hashes(_normalised(text), n)


@register
class DecontaminationFilter(Filter):
    """Drop rows whose prompts (or replies) share word n-grams with an evaluation set — a
    benchmark's test split — after lower-casing and removing punctuation (Brown et al., "Language
    Models are Few-Shot Learners", 2020, appendix C: 13-grams; items shorter than n count whole)."""

    name = "decontamination_filter"
    aliases = ("decontaminate",)
    reads_text = False
    stats = {"eval_ngram_hits": "n-grams also in the evaluation set"}
    bounds = {"eval_ngram_hits": (None, "max_hits")}

    class Params(OpParams):
        path: str = Field(description="evaluation set: JSONL, JSON array or Parquet (or a built-in demo:NAME)")
        field: str = Field("question", description="its text field")
        ngram: int = Field(13, ge=1, description="words per n-gram (GPT-3 used 13)")
        check: list[str] = Field(default_factory=lambda: ["user"], description="roles whose turns are checked")
        max_hits: int = Field(0, ge=0, description="drop rows with more shared n-grams than this")

    example = {"path": "gsm8k/test.jsonl", "field": "question", "ngram": 13}

    def setup(self) -> None:
        path = self.params.path
        t = pa.Table.from_pylist(read_side_file(path, self.params.field, what=f"{self.name}: evaluation set"))
        if self.params.field not in t.column_names:
            raise ThresherError(f"{self.name}: '{path}' has no field '{self.params.field}' "
                                f"(fields: {', '.join(t.column_names)})")
        flat, _ = _ngram_sets(pc.fill_null(t.column(self.params.field).combine_chunks().cast(pa.string()), ""),
                              self.params.ngram)
        self._eval = np.unique(flat)

    def compute_stats(self, batch: pa.Table) -> dict:
        text = turn_text(batch.column("messages"), tuple(self.params.check))
        flat, per = _ngram_sets(text, self.params.ngram)
        hit = np.isin(flat, self._eval).astype(np.int64)
        bounds = np.concatenate([[0], np.cumsum(per)])
        cs = np.concatenate([[0], np.cumsum(hit)])
        return {"eval_ngram_hits": cs[bounds[1:]] - cs[bounds[:-1]]}

    def drop_reasons(self, stats: dict) -> dict:
        return {"overlaps_eval_set": over(stats["eval_ngram_hits"], self.params.max_hits)}


@register
class ChatLanguageFilter(Filter):
    """Language of the prompt (user turns) and of the response (assistant turns) with fastText
    lid.176: keep rows whose both sides are in ``languages`` (at ``min_score``), and, with
    ``same_language``, answer in the language they were asked in."""

    name = "chat_language_filter"
    reads_text = False
    stats = {"prompt_lang": "language of the user turns", "response_lang": "language of the assistant turns",
             "prompt_lang_score": "its probability", "response_lang_score": "its probability"}
    # the rule is min(prompt, response) < min_score: the same rows as either side under it
    bounds = {"prompt_lang_score": ("min_score", None), "response_lang_score": ("min_score", None)}
    resources = Resources(cpus=1.0, memory_mb=300, needs_model=True)
    columns = ("prompt_lang", "response_lang")

    class Params(OpParams):
        languages: list[str] = Field(default_factory=list, description="languages to keep (empty: any)")
        min_score: float = Field(0.5, ge=0, le=1, description="minimum probability for either side")
        same_language: bool = Field(True, description="the response must be in the prompt's language")
        model_path: str | None = Field(None, description="a lid.176 model of your own (default: fetched into the cache)")

    example = {"languages": ["en"], "same_language": True}

    def prepare(self) -> None:
        asset_path(LID176, self.params.model_path)

    def setup(self) -> None:
        self._model = load_fasttext(str(asset_path(LID176, self.params.model_path, fetch=False)))

    def compute_stats(self, batch: pa.Table) -> dict:
        out = {}
        for side, text in (("prompt", turn_text(batch.column("messages"), ("user",))), ("response", _replies(batch))):
            labels, score = predict_top(self._model, one_line(text))
            out[f"{side}_lang"] = pa.array([x.removeprefix("__label__") for x in labels], pa.string())
            out[f"{side}_lang_score"] = pa.array(score)
        return out

    def drop_reasons(self, stats: dict) -> dict:
        p = self.params
        pl_, rl = stats["prompt_lang"], stats["response_lang"]
        n = len(pl_)
        out = {}
        if p.languages:
            allowed = pa.array(p.languages, pa.string())
            out["language_not_allowed"] = ~(pc.is_in(pl_, allowed).to_numpy(zero_copy_only=False)
                                            & pc.is_in(rl, allowed).to_numpy(zero_copy_only=False))
        out["language_score_too_low"] = under(np.minimum(stats["prompt_lang_score"].to_numpy(),
                                                         stats["response_lang_score"].to_numpy()), p.min_score)
        out["answered_in_another_language"] = (pc.not_equal(pl_, rl).to_numpy(zero_copy_only=False) if p.same_language
                                               else np.zeros(n, dtype=bool))
        return out


@register
class RelevanceFilter(Filter):
    """Response-vs-instruction relevance without a model: the share of the prompt's content words
    (lower-cased, 4+ letters) that the response uses, and their word-set Jaccard. Answers that
    share nothing with a long question are usually off-topic or canned."""

    name = "relevance_filter"
    reads_text = False
    stats = {"prompt_coverage": "share of the prompt's content words found in the response"}
    bounds = {"prompt_coverage": ("min_coverage", None)}  # NaN (prompt too short to judge) is never outside

    class Params(OpParams):
        min_coverage: float = Field(0.1, ge=0, le=1, description="drop below this share")
        min_prompt_words: int = Field(5, ge=1, description="prompts with fewer content words are not judged")

    example = {"min_coverage": 0.1}

    def compute_stats(self, batch: pa.Table) -> dict:
        prompts = turn_text(batch.column("messages"), ("user",)).to_pylist()
        replies = _replies(batch).to_pylist()
        cov = np.full(len(prompts), np.nan)
        for i, (q, a) in enumerate(zip(prompts, replies, strict=True)):
            qw = set(_WORD.findall(q.lower()))
            if len(qw) >= self.params.min_prompt_words:
                cov[i] = len(qw & set(_WORD.findall(a.lower()))) / len(qw)
        return {"prompt_coverage": pa.array(cov, from_pandas=True)}

    def drop_reasons(self, stats: dict) -> dict:
        cov = stats["prompt_coverage"].to_numpy(zero_copy_only=False)
        return {"response_off_topic": under(cov, self.params.min_coverage)}  # NaN: prompt too short to judge


_WORD = re.compile(r"[^\W\d_]{4,}")
