"""Features for the ``embedding-logreg`` quality model: a document's sentence embedding
(``operators.common.embedding``: all-MiniLM-L6-v2 int8 ONNX by default, L2-normalised), optionally
followed by the Gopher, C4 and FineWeb rule statistics the rule filters compute (the same code as
``gopher_quality_filter`` & co., vectorised), so one linear model weighs meaning and surface
signals together — an ensemble of the rules and the embedding classifier in a single calibrated
score. Count-like statistics are log-scaled; the model standardises everything."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from thresher.pipeline.errors import ThresherError

# (op, stat) pairs, in model order; the counts are log1p-scaled
RULE_FEATURES: tuple[tuple[str, str], ...] = (
    ("gopher_quality_filter", "num_words"), ("gopher_quality_filter", "mean_word_length"),
    ("gopher_quality_filter", "hash_ratio"), ("gopher_quality_filter", "ellipsis_ratio"),
    ("gopher_quality_filter", "bullet_lines_ratio"), ("gopher_quality_filter", "ellipsis_lines_ratio"),
    ("gopher_quality_filter", "alpha_words_ratio"), ("gopher_quality_filter", "stop_words"),
    ("gopher_repetition_filter", "dup_line_frac"), ("gopher_repetition_filter", "dup_line_char_frac"),
    ("gopher_repetition_filter", "dup_para_frac"), ("gopher_repetition_filter", "top_2_gram_char_frac"),
    ("gopher_repetition_filter", "top_3_gram_char_frac"), ("gopher_repetition_filter", "dup_5_gram_char_frac"),
    ("c4_quality_filter", "num_sentences"), ("c4_quality_filter", "has_curly_bracket"),
    ("fineweb_quality_filter", "line_punct_ratio"), ("fineweb_quality_filter", "short_line_ratio"),
    ("fineweb_quality_filter", "char_dup_ratio"), ("fineweb_quality_filter", "list_ratio"),
    ("fineweb_quality_filter", "non_blank_lines"),
)
LOG_SCALED = {"num_words", "stop_words", "num_sentences", "non_blank_lines"}

# Page-shape statistics the rules do not have, in model order (``surface_features``). What separates the
# pages people call good from the others in DCLM's human-labelled web pages (docs/quality.md) is largely
# shape: good pages are longer, in paragraph-length lines; poor ones are short, in menu- and form-length
# lines, with counters, links, separators, forum and comment furniture, first-person chatter.
SURFACE_FEATURES: tuple[str, ...] = (
    "log_chars", "log_lines", "log_mean_line_chars", "paragraph_char_share", "short_line_share",
    "digit_share", "upper_share", "separators_per_100_chars", "links_per_1000_chars",
    "first_person_per_word", "page_chrome_per_word",
)
_FIRST_PERSON = r"\b(?:I|my|me|I'm|lol|thanks)\b"
_PAGE_CHROME = r"(?i)\b(?:reply|posted|comments?|login|register|click|share|posts?|quote)\b"


def rule_features(texts: list[str], ops: dict | None = None) -> np.ndarray:
    """(n, len(RULE_FEATURES)) float64: the rule filters' statistics of each text."""
    from thresher.pipeline.registry import get_op

    ops = ops if ops is not None else {}
    table = pa.table({"text": pa.array(texts, pa.string())})
    stats: dict[str, dict] = {}
    for op_name in dict.fromkeys(o for o, _ in RULE_FEATURES):
        if op_name not in ops:
            cls = get_op(op_name)
            op = cls(cls.Params())
            op.setup()
            ops[op_name] = op
        stats[op_name] = ops[op_name].compute_stats(table)
    cols = []
    for op_name, stat in RULE_FEATURES:
        col = stats[op_name][stat]
        v = np.asarray(col.to_numpy(zero_copy_only=False) if hasattr(col, "to_numpy") else col, dtype=np.float64)
        cols.append(np.log1p(v) if stat in LOG_SCALED else v)
    return np.nan_to_num(np.column_stack(cols)) if cols else np.zeros((len(texts), 0))


def surface_features(texts: list[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n, len(SURFACE_FEATURES)) float64, vectorised with pyarrow.compute: the text's length, its
    non-blank lines (count, mean length, the share of characters in lines of 200+ characters — mC4's
    paragraph notion — and the share of lines under 30 characters), digits, capitals, separator
    characters (| » •), links and @, first-person words and page-furniture words (reply, posted,
    comments, login, share, ...) per word."""
    import pyarrow.compute as pc

    text = pc.fill_null(pa.array(texts, pa.string()) if isinstance(texts, list) else texts, "")
    n = len(text)

    def count(pattern: str) -> np.ndarray:
        return np.asarray(pc.count_substring_regex(text, pattern).to_numpy(zero_copy_only=False), dtype=np.float64)

    chars = np.asarray(pc.utf8_length(text).to_numpy(zero_copy_only=False), dtype=np.float64)
    lines = pc.split_pattern(text, "\n")
    flat = pc.list_flatten(lines)
    parent = np.asarray(pc.list_parent_indices(lines).to_numpy(zero_copy_only=False))
    length = np.asarray(pc.utf8_length(flat).to_numpy(zero_copy_only=False), dtype=np.float64)
    filled = np.asarray(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(flat)), 0).to_numpy(zero_copy_only=False))
    parent, length = parent[filled], length[filled]
    n_lines = np.bincount(parent, minlength=n).astype(np.float64)
    line_chars = np.bincount(parent, weights=length, minlength=n)
    para = np.bincount(parent, weights=np.where(length >= 200, length, 0.0), minlength=n)
    short = np.bincount(parent, weights=(length < 30).astype(np.float64), minlength=n)
    words = np.maximum(count(r"\S+"), 1.0)
    per_char = np.maximum(chars, 1.0)
    cols = [np.log1p(chars), np.log1p(n_lines), np.log1p(line_chars / np.maximum(n_lines, 1.0)),
            para / np.maximum(line_chars, 1.0), np.where(n_lines > 0, short / np.maximum(n_lines, 1.0), 1.0),
            count(r"\d") / per_char, count(r"\p{Lu}") / per_char, count("[|»•]") / per_char * 100,
            count(r"https?://|www\.|@") / per_char * 1000, count(_FIRST_PERSON) / words, count(_PAGE_CHROME) / words]
    return np.column_stack(cols) if n else np.zeros((0, len(SURFACE_FEATURES)))


class Featurizer:
    """Texts -> the feature matrix a model was trained on (its metadata names the embedding model,
    its dimension and whether rule statistics follow). The embedder and the rule ops load once."""

    def __init__(self, rules: bool = False, model_path: str | None = None, tokenizer_path: str | None = None,
                 max_tokens: int = 256, batch_size: int = 64, dim: int | None = None, surface: bool = False):
        self.rules = rules
        self.surface = surface
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.paths = {"model_path": model_path, "tokenizer_path": tokenizer_path}
        self._dim = dim
        self._embedder = None
        self._ops: dict = {}

    @property
    def embedder(self):
        """The sentence encoder, loaded on first use (not at all when every batch brings its vectors)."""
        if self._embedder is None:
            from thresher.operators.common.embedding import get_embedder

            self._embedder = get_embedder(max_tokens=self.max_tokens, **self.paths)
        return self._embedder

    @property
    def dim(self) -> int:
        return self._dim if self._dim is not None else int(self.embedder.dim)

    @classmethod
    def for_model(cls, meta: dict) -> Featurizer:
        emb = meta.get("embedding", {})
        return cls(rules=bool(meta.get("rule_features")), model_path=emb.get("model_path"),
                   tokenizer_path=emb.get("tokenizer_path"), max_tokens=int(emb.get("max_tokens", 256)),
                   dim=emb.get("dim"), surface=bool(meta.get("surface_features")))

    def describe(self) -> dict:
        """What a model trained on these features records about them."""
        e = self.embedder
        return {"embedding": {"name": e.name, "dim": int(e.dim), "max_tokens": int(e.max_tokens), **self.paths},
                "rule_features": [f"{o}.{s}" for o, s in RULE_FEATURES] if self.rules else [],
                "surface_features": list(SURFACE_FEATURES) if self.surface else []}

    def __call__(self, texts: list[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """The features of ``texts``; ``embeddings`` (their unit vectors from the same model, e.g. an
        ``embed`` column) are used instead of encoding the texts again."""
        if embeddings is None:
            embeddings = self.embedder.encode(list(texts), batch_size=self.batch_size)
        elif embeddings.shape != (len(texts), self.dim):
            raise ThresherError(f"the embedding column's vectors have {embeddings.shape[1:]} dimensions, the quality "
                                f"model's embedding has {self.dim}")
        blocks = [np.asarray(embeddings, dtype=np.float64)]
        if self.rules:
            blocks.append(rule_features(list(texts), self._ops))
        if self.surface:
            blocks.append(surface_features(list(texts)))
        return np.hstack(blocks) if len(blocks) > 1 else blocks[0]
