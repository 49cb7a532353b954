"""Features for the ``embedding-logreg`` quality model: a document's sentence embedding
(``operators.common.embedding``: all-MiniLM-L6-v2 int8 ONNX by default, L2-normalised), optionally
followed by the Gopher, C4 and FineWeb rule statistics the rule filters compute (the same code as
``gopher_quality_filter`` & co., vectorised), so one linear model weighs meaning and surface
signals together — an ensemble of the rules and the embedding classifier in a single calibrated
score. Count-like statistics are log-scaled; the model standardises everything."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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


class Featurizer:
    """Texts -> the feature matrix a model was trained on (its metadata names the embedding model,
    its dimension and whether rule statistics follow). The embedder and the rule ops load once."""

    def __init__(self, rules: bool = False, model_path: str | None = None, tokenizer_path: str | None = None,
                 max_tokens: int = 256, batch_size: int = 64):
        from thresher.operators.common.embedding import get_embedder

        self.rules = rules
        self.batch_size = batch_size
        self.paths = {"model_path": model_path, "tokenizer_path": tokenizer_path}
        self.embedder = get_embedder(model_path=model_path, tokenizer_path=tokenizer_path, max_tokens=max_tokens)
        self._ops: dict = {}

    @classmethod
    def for_model(cls, meta: dict) -> Featurizer:
        emb = meta.get("embedding", {})
        return cls(rules=bool(meta.get("rule_features")), model_path=emb.get("model_path"),
                   tokenizer_path=emb.get("tokenizer_path"), max_tokens=int(emb.get("max_tokens", 256)))

    def describe(self) -> dict:
        """What a model trained on these features records about them."""
        e = self.embedder
        return {"embedding": {"name": e.name, "dim": int(e.dim), "max_tokens": int(e.max_tokens), **self.paths},
                "rule_features": [f"{o}.{s}" for o, s in RULE_FEATURES] if self.rules else []}

    def __call__(self, texts: list[str]) -> np.ndarray:
        emb = np.asarray(self.embedder.encode(list(texts), batch_size=self.batch_size), dtype=np.float64)
        if not self.rules:
            return emb
        return np.hstack([emb, rule_features(list(texts), self._ops)])
