"""Token-length statistics the planners work from: measured on a thresher output directory (or any
JSONL/Parquet files) with a real tokenizer, or synthesised from a mean (and a p95)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq

from thresher.pipeline.errors import ThresherError
from thresher.pipeline.tokenizers import token_counter


@dataclass
class LengthStats:
    """Token lengths of ``rows`` sequences, represented by ``lengths`` (all of them, or an evenly
    spaced sample whose sums are scaled to ``rows``)."""

    lengths: np.ndarray
    rows: int
    source: str = ""
    tokenizer: str = ""
    shape: str = ""  # text | messages | preference | kto | prompt_completion (measured data)
    objective: str = "sft"  # sft | dpo | kto: what training on these rows does
    template: str = ""  # the chat template counted in the lengths
    pairs: int = 0  # preference data: rows (each two sequences, chosen and rejected, in lengths)

    @property
    def scale(self) -> float:
        return self.rows / max(1, len(self.lengths))

    @property
    def mean(self) -> float:
        return float(self.lengths.mean()) if len(self.lengths) else 0.0

    @property
    def total(self) -> float:
        return float(self.lengths.sum()) * self.scale

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.lengths, q)) if len(self.lengths) else 0.0

    def truncated(self, max_len: int) -> LengthStats:
        return dataclasses.replace(self, lengths=np.minimum(self.lengths, max_len))

    def packing_efficiency(self, max_len: int, sample: int = 20_000) -> float:
        """Share of the tokens in packed ``max_len`` sequences that are real (not padding), packing
        the measured lengths first-fit-decreasing (longer ones cut into ``max_len`` chunks, as
        training.token_counts does); an evenly spaced sample of ``sample`` lengths when there are more."""
        x = np.sort(self.lengths)
        if len(x) == 0 or max_len <= 0:
            return 1.0
        if len(x) > sample:
            x = x[np.linspace(0, len(x) - 1, sample).astype(np.int64)]
        x = np.ceil(x).astype(np.int64)
        full = int((x // max_len).sum())
        rest = np.sort(x % max_len)[::-1]
        rest = rest[rest > 0]
        room = np.empty(len(rest), dtype=np.int64)
        bins = 0
        for item in rest:
            if bins:
                j = int(np.argmax(room[:bins] >= item))
                if room[j] >= item:
                    room[j] -= item
                    continue
            room[bins] = max_len - item
            bins += 1
        return float(x.sum()) / ((bins + full) * max_len)

    def sum_squares(self, max_len: int | None = None) -> float:
        """Σ len² (what attention costs: not mean(len)² x n)."""
        x = self.lengths if max_len is None else np.minimum(self.lengths, max_len)
        return float((x.astype(np.float64) ** 2).sum()) * self.scale

    def summary(self) -> dict:
        return {"rows": self.rows, "tokens": round(self.total), "mean": round(self.mean, 1),
                "p50": self.quantile(0.5), "p95": self.quantile(0.95), "max": float(self.lengths.max()) if len(self.lengths) else 0,
                "source": self.source, "tokenizer": self.tokenizer, "shape": self.shape, "objective": self.objective,
                "template": self.template, "pairs": self.pairs}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def constant(cls, length: float, rows: int = 1) -> LengthStats:
        return cls(np.full(1, float(length)), rows, f"given: {length:g} tokens")

    @classmethod
    def lognormal(cls, mean: float, p95: float, rows: int = 1, points: int = 1000) -> LengthStats:
        """A log-normal with this mean and 95th percentile (lengths of text are close to log-normal)."""
        if p95 <= mean:
            return cls.constant(mean, rows)
        z = NormalDist().inv_cdf(0.95)
        gap = math.log(p95) - math.log(mean)
        disc = z * z - 2 * gap
        if disc < 0:
            raise ThresherError(f"no log-normal has mean {mean:g} and p95 {p95:g}; give a smaller p95")
        sigma = z - math.sqrt(disc)
        mu = math.log(mean) - sigma * sigma / 2
        nd = NormalDist()
        x = np.array([math.exp(mu + sigma * nd.inv_cdf((i + 0.5) / points)) for i in range(points)])
        return cls(x, rows, f"given: mean {mean:g}, p95 {p95:g} (log-normal)")

    @classmethod
    def parse(cls, spec: str, rows: int = 1) -> LengthStats:
        """'512' or 'mean=512,p95=1500'."""
        try:
            if "=" not in spec:
                return cls.constant(float(spec), rows)
            kv = dict(part.split("=", 1) for part in spec.split(","))
            unknown = set(kv) - {"mean", "p95"}
            if unknown or "mean" not in kv:
                raise ValueError
            return cls.lognormal(float(kv["mean"]), float(kv.get("p95", kv["mean"])), rows)
        except ValueError:
            raise ThresherError(f"length '{spec}': give a number of tokens or mean=N,p95=M") from None

    @classmethod
    def from_files(cls, path: str | Path, field: str = "text", tokenizer: str = "cl100k_base",
                   sample: int | None = None) -> LengthStats:
        """Token lengths of ``field`` in a thresher output directory (its ``data/``) or JSONL/Parquet files."""
        files = _data_files(Path(path))
        texts = []
        for f in files:
            t = pq.read_table(f) if f.suffix == ".parquet" else pj.read_json(f)
            if field not in t.column_names:
                raise ThresherError(f"{f}: no field '{field}' (fields: {', '.join(t.column_names)})")
            texts.append(_as_text(t[field]))
        col = pa.chunked_array([c for t in texts for c in t.chunks], type=pa.string()) if texts else pa.chunked_array([], pa.string())
        rows = len(col)
        if rows == 0:
            raise ThresherError(f"{path}: no rows to measure")
        idx = np.arange(rows) if not sample or sample >= rows else np.linspace(0, rows - 1, sample).astype(np.int64)
        picked = col.take(pa.array(idx)).to_pylist()
        counter = token_counter(tokenizer)
        lengths = np.concatenate([counter.count(picked[i:i + 10_000]) for i in range(0, len(picked), 10_000)])
        return cls(lengths.astype(np.float64), rows, str(path), tokenizer)


def _as_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return pc.fill_null(col.cast(pa.string()), "")
    # structured (e.g. chat messages): count the JSON text, which is what a template renders close to
    return pa.chunked_array([pa.array([str(v) for v in col.to_pylist()], pa.string())])


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if (path / "data").is_dir():
        if not (path / "_SUCCESS").exists():
            raise ThresherError(f"{path} is an unfinished thresher run (no _SUCCESS); finish it with --resume")
        path = path / "data"
    files = sorted(f for f in path.glob("*") if f.suffix in (".jsonl", ".parquet", ".json"))
    if not files:
        raise ThresherError(f"{path}: no .jsonl or .parquet files")
    return files


# ---------------------------------------------------------------------------- thresher outputs of every shape
# Chat-template overhead in tokens of the model's tokenizer (special tokens count 1):
# (per message, per sequence, generation prompt). ChatML: <|im_start|> role \n ... <|im_end|> \n ~ 4 per
# message, "<|im_start|>assistant\n" = 3 to prompt a reply; Llama-3: <|start_header_id|> role
# <|end_header_id|> \n\n ... <|eot_id|> = 5, <|begin_of_text|> once, the assistant header (4) to prompt;
# Llama-2/Mistral: [INST] ... [/INST] and <s>/</s> around each exchange ~ 4 per message; Gemma:
# <start_of_turn>role\n ... <end_of_turn>\n = 5, <bos> once, "<start_of_turn>model\n" = 3.
TEMPLATES = {"chatml": (4, 0, 3), "llama3": (5, 1, 4), "llama2": (4, 1, 0), "mistral": (4, 1, 0), "gemma": (5, 1, 3),
             "none": (0, 0, 0)}
_MARKERS = (("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3"), ("<start_of_turn>", "gemma"),
            ("[INST]", "llama2"))


@dataclass
class ChatTemplate:
    """How a conversation becomes one token sequence. From a name (``chatml`` default) or a Hugging
    Face ``tokenizer_config.json`` (or the folder holding it): its ``chat_template`` is rendered with
    jinja2 when jinja2 is installed (every row rendered and tokenized: exact with that model's
    tokenizer.json; with cl100k_base the special-token strings count as several tokens), else its
    family is recognised by its markers and the per-message overhead above is added to the tokens
    of the message contents."""

    name: str = "chatml"
    per_message: int = 4
    per_sequence: int = 0
    generation: int = 3
    jinja: object = None
    specials: dict | None = None
    special_tokens: tuple[str, ...] = ()  # the tokenizer's added tokens: one token each in a rendered text

    @classmethod
    def load(cls, spec: str | None) -> ChatTemplate:
        if not spec:
            return cls()
        if spec in TEMPLATES:
            return cls(spec, *TEMPLATES[spec])
        p = Path(spec)
        if p.is_dir():
            p = p / "tokenizer_config.json"
        if not p.is_file():
            raise ThresherError(f"chat template '{spec}': give one of {', '.join(TEMPLATES)} or a tokenizer_config.json")
        import json

        try:
            cfg = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ThresherError(f"{p}: not valid JSON ({e.msg})") from None
        tpl = cfg.get("chat_template")
        if isinstance(tpl, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
            tpl = named.get("default") or next(iter(named.values()), None)
        if not tpl:
            raise ThresherError(f"{p}: no chat_template")
        name = next((n for marker, n in _MARKERS if marker in tpl), "chatml")
        out = cls(f"{name} ({p})", *TEMPLATES[name])
        try:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            return out

        def _tok(v):
            return v.get("content", "") if isinstance(v, dict) else (v or "")

        def raise_exception(msg):
            raise jinja2.TemplateError(msg)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: __import__("datetime").datetime.now().strftime(fmt)
        try:
            out.jinja = env.from_string(tpl)
        except jinja2.TemplateError:
            return out
        out.name = f"{name} ({p}, rendered)"
        out.specials = {"bos_token": _tok(cfg.get("bos_token")), "eos_token": _tok(cfg.get("eos_token"))}
        added = [v.get("content") for v in (cfg.get("added_tokens_decoder") or {}).values() if isinstance(v, dict)]
        if added:  # without the tokenizer's list, rendered() recognises the usual shapes of special tokens
            out.special_tokens = tuple(sorted({t for t in [*added, *out.specials.values()] if t}, key=len, reverse=True))
        return out

    def render(self, messages: list[dict], generation: bool = False) -> str:
        return self.jinja.render(messages=messages, add_generation_prompt=generation, **(self.specials or {}))


def _content(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, list):  # multimodal parts: [{"type": "text", "text": ...}]
        return "".join(_content(x.get("text", "") if isinstance(x, dict) else x) for x in v)
    return str(v)


def _messages(v) -> list[dict]:
    """A conversation in OpenAI/TRL (role/content) or ShareGPT (from/value) form; a string is one user turn."""
    if isinstance(v, str):
        return [{"role": "user", "content": v}]
    out = []
    for m in v or []:
        if isinstance(m, dict):
            role = m.get("role") or {"human": "user", "gpt": "assistant"}.get(m.get("from"), m.get("from") or "user")
            out.append({"role": role, "content": _content(m.get("content", m.get("value")))})
    return out


def _conversational(v) -> bool:
    return isinstance(v, list) and bool(v) and isinstance(v[0], dict)


class _Counter:
    """Token lengths of conversations and strings, batched through one tokenizer."""

    def __init__(self, tokenizer: str, template: ChatTemplate):
        self.tok, self.t = token_counter(tokenizer), template

    def texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return np.concatenate([self.tok.count(texts[i:i + 10_000]) for i in range(0, len(texts), 10_000)]).astype(np.float64)

    def rendered(self, texts: list[str]) -> np.ndarray:
        """Rendered conversations. A tokenizer.json knows its added tokens; tiktoken does not, so with it
        each special-token string (the tokenizer_config's added tokens, else anything like <|...|>,
        <start_of_turn>, <s>) counts one token and the text between them is tokenized apart, as a
        Hugging Face tokenizer splits at added tokens."""
        if getattr(self.tok, "_hf", None) is not None:
            return self.texts(texts)
        import re

        specials = self.t.special_tokens
        pat = re.compile("|".join(re.escape(x) for x in specials) if specials else
                         r"<\|[^<>|\s]{1,60}\|>|<start_of_turn>|<end_of_turn>|<bos>|<eos>|</?s>")
        pieces, owner, marks = [], [], np.zeros(len(texts))
        for i, t in enumerate(texts):
            parts = pat.split(t)
            marks[i] = len(parts) - 1
            pieces.extend(x for x in parts if x)
            owner.extend(i for x in parts if x)
        return np.bincount(np.asarray(owner, dtype=np.int64), weights=self.texts(pieces), minlength=len(texts)) + marks

    def chats(self, convs: list[list[dict]], generation: bool = False) -> np.ndarray:
        if self.t.jinja is not None:
            try:
                return self.rendered([self.t.render(c, generation) for c in convs])
            except Exception:  # noqa: BLE001 - a template that rejects a row (roles it forbids): estimate instead
                self.t.jinja = None
                self.t.name += " (render failed: per-message estimate)"
        flat = [m["content"] for c in convs for m in c]
        counts = self.texts(flat)
        n = np.array([len(c) for c in convs], dtype=np.int64)
        sums = np.zeros(len(convs))
        if len(flat):
            starts = np.concatenate([[0], np.cumsum(n)[:-1]])
            nz = n > 0
            sums[nz] = np.add.reduceat(counts, starts[nz])
        return sums + self.t.per_message * n + self.t.per_sequence + (self.t.generation if generation else 0)

    def any(self, values: list, generation: bool = False) -> np.ndarray:
        """Conversations through the template, strings as they are."""
        if values and _conversational(values[0]):
            return self.chats([_messages(v) for v in values], generation)
        return self.texts([_content(v) for v in values])


def _read_rows(path: str | Path, sample: int | None) -> tuple[list[dict], int, list[str]]:
    """The rows (all, or an evenly spaced sample: only those are parsed) of a thresher output or
    JSONL/Parquet files, the number of rows, and the fields of the first file."""
    import json

    files = _data_files(Path(path))
    counts, lines = [], {}
    for f in files:
        if f.suffix == ".parquet":
            counts.append(pq.ParquetFile(f).metadata.num_rows)
        else:
            with open(f, encoding="utf-8") as fh:
                lines[f] = [x for x in fh if x.strip()]
            counts.append(len(lines[f]))
    n = sum(counts)
    if n == 0:
        raise ThresherError(f"{path}: no rows to measure")
    want = np.arange(n) if not sample or sample >= n else np.unique(np.linspace(0, n - 1, sample).astype(np.int64))
    rows: list[dict] = []
    columns: list[str] = []
    start = 0
    for f, c in zip(files, counts, strict=True):
        idx = want[(want >= start) & (want < start + c)] - start
        start += c
        if f.suffix == ".parquet":
            pf = pq.ParquetFile(f)
            columns = columns or pf.schema_arrow.names
            if len(idx):
                rows.extend(pf.read().take(pa.array(idx)).to_pylist())
        else:
            for i in idx:
                try:
                    rows.append(json.loads(lines[f][i]))
                except json.JSONDecodeError as e:
                    raise ThresherError(f"{f}: row {i + 1} is not valid JSON ({e.msg})") from None
            if rows and not columns:
                columns = list(rows[0])
    return rows, n, columns


def detect_shape(columns: list[str], first: dict) -> str:
    """'messages' (SFT chat), 'preference' (prompt/chosen/rejected: DPO, TRL plain or conversational,
    implicit prompt too), 'kto' (prompt/completion/label), 'prompt_completion', or 'text'."""
    cols = set(columns)
    if {"chosen", "rejected"} <= cols:
        return "preference"
    if {"prompt", "completion", "label"} <= cols:
        return "kto"
    if "messages" in cols or ("conversations" in cols and _conversational(first.get("conversations"))):
        return "messages"
    if "prompt" in cols and ({"completion", "response"} & cols):
        return "prompt_completion"
    if "text" in cols:
        return "text"
    raise ThresherError(f"no field to measure: expected text, messages, prompt+chosen+rejected or prompt+completion "
                        f"(fields: {', '.join(columns)}); name one with --field")


OBJECTIVE = {"messages": "sft", "text": "sft", "prompt_completion": "sft", "preference": "dpo", "kto": "kto"}


def _split_preference(r: dict) -> tuple[list | str, list | str, list | str]:
    """(prompt, chosen, rejected); TRL's implicit-prompt form keeps the shared turns in chosen/rejected."""
    p, c, j = r.get("prompt"), r.get("chosen"), r.get("rejected")
    if p is None and _conversational(c):
        p, c, j = c[:-1], c[-1:], (j[-1:] if _conversational(j) else j)
    return p if p is not None else "", c, j


def training_stats(path: str | Path, tokenizer: str = "cl100k_base", sample: int | None = None,
                   template: str | None = None) -> LengthStats:
    """Token lengths of the training sequences in a thresher output of any shape, and its objective:
    text; SFT ``messages`` with the chat template's tokens; DPO rows as prompt+chosen and
    prompt+rejected (two sequences per pair: ``rows`` counts sequences, ``pairs`` the rows); KTO rows
    as prompt+completion."""
    rows, n, columns = _read_rows(path, sample)
    shape = detect_shape(columns, rows[0])
    t = ChatTemplate.load(template)
    cnt = _Counter(tokenizer, t)
    key = "messages" if "messages" in columns else "conversations"
    pairs = 0
    if shape == "text":
        lengths, rows_out = cnt.texts([_content(r.get("text")) for r in rows]), n
    elif shape == "messages":
        lengths, rows_out = cnt.chats([_messages(r.get(key)) for r in rows]), n
    elif shape == "preference":
        split = [_split_preference(r) for r in rows]
        lengths = np.concatenate([_joined(cnt, [s[0] for s in split], [s[i] for s in split]) for i in (1, 2)])
        rows_out, pairs = 2 * n, n
    else:
        resp = "completion" if "completion" in columns else "response"
        lengths, rows_out = _joined(cnt, [r.get("prompt") for r in rows], [r.get(resp) for r in rows]), n
    s = LengthStats(lengths, rows_out, str(path), tokenizer)
    s.shape, s.objective, s.pairs = shape, OBJECTIVE[shape], pairs
    s.template = t.name if shape != "text" else ""
    return s


def _joined(cnt: _Counter, prompts: list, answers: list) -> np.ndarray:
    """Tokens of prompt followed by answer: one conversation through the template when they are
    conversational, else the two strings."""
    if (prompts and _conversational(prompts[0])) or (answers and _conversational(answers[0])):
        return cnt.chats([_messages(p) + _messages(a) if _conversational(a) else
                          _messages(p) + [{"role": "assistant", "content": _content(a)}] for p, a in zip(prompts, answers, strict=True)])
    return cnt.texts([_content(p) for p in prompts]) + cnt.texts([_content(a) for a in answers])


def serving_stats(path: str | Path, tokenizer: str = "cl100k_base", sample: int | None = None,
                  template: str | None = None) -> tuple[LengthStats, LengthStats]:
    """(prompt lengths, response lengths) of the requests a thresher output stands for: a chat's
    prompt is the conversation before its last assistant turn (with the template and the generation
    prompt), its response that turn (+1 end token); DPO: prompt and chosen; KTO / prompt-completion:
    prompt and completion."""
    rows, n, columns = _read_rows(path, sample)
    shape = detect_shape(columns, rows[0])
    t = ChatTemplate.load(template)
    cnt = _Counter(tokenizer, t)
    if shape == "text":
        raise ThresherError(f"{path} holds plain text, no prompts and responses: give --prompt-len/--output-len, or "
                            "--prompt-field/--response-field")
    if shape == "messages":
        key = "messages" if "messages" in columns else "conversations"
        prompts, answers = [], []
        for r in rows:
            m = _messages(r.get(key))
            last = max((i for i, x in enumerate(m) if x["role"] == "assistant"), default=None)
            if last is not None:
                prompts.append(m[:last])
                answers.append(m[last]["content"])
        if not prompts:
            raise ThresherError(f"{path}: no conversation has an assistant turn to count as a response")
        p_len = cnt.chats(prompts, generation=True)
    else:
        if shape == "preference":
            pa_ = [_split_preference(r) for r in rows]
            raw_p, raw_a = [x[0] for x in pa_], [x[1] for x in pa_]
        else:
            resp = "completion" if "completion" in columns else "response"
            raw_p, raw_a = [r.get("prompt") for r in rows], [r.get(resp) for r in rows]
        conv = bool(raw_p) and _conversational(raw_p[0])
        p_len = cnt.chats([_messages(p) for p in raw_p], generation=True) if conv else cnt.texts([_content(p) for p in raw_p])
        answers = [_content(_messages(a)[-1]["content"]) if _conversational(a) else _content(a) for a in raw_a]
    a_len = cnt.texts(answers) + 1
    scale_rows = round(n * len(answers) / max(1, len(rows)))
    prompt = LengthStats(p_len, scale_rows, str(path), tokenizer)
    output = LengthStats(a_len, scale_rows, str(path), tokenizer)
    for s in (prompt, output):
        s.shape, s.objective, s.template = shape, OBJECTIVE[shape], t.name
    return prompt, output
