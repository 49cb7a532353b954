"""Filter thresholds (``Filter.bounds`` / ``Filter.thresholds``): every declared parameter path
resolves and names a stat, and on real computed stats a row that a declared ``Bound`` puts outside
is a row the filter drops (and a row dropped by a bound's rule lies outside that bound) — the
report draws these bounds on histograms and ``thresher analyze --suggest`` rewrites them, so they
must say exactly what the filter does."""

from __future__ import annotations

import json
import typing

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from thresher.operators.common import chat as chatfmt
from thresher.operators.filter.lexicon import lists_index
from thresher.operators.filter.wordlists import STOP_WORDS, flagged_words
from thresher.pipeline.demo import make_demo_records
from thresher.pipeline.demo_chat import LEAKED, chat_records
from thresher.pipeline.ops import Bound, Filter, param_at
from thresher.pipeline.registry import all_ops, is_builtin

FILTERS = {name: cls for name, cls in all_ops().items() if issubclass(cls, Filter)}
# parameters without a default
REQUIRED = {"quality_classifier": {"model_path": "quality.bin"}, "decontamination_filter": {"path": "eval.jsonl"},
            "regex_filter": {"patterns": ["lorem"]},
            "field_filter": {"condition": "lang = 'en'"}, "field_value_filter": {"field": "lang", "values": ["en"]},
            "suffix_filter": {"field": "lang", "suffixes": ["gb"]}, "field_range_filter": {"field": "score"},
            "random_sample": {"fraction": 0.5}, "perplexity_filter": {"model_path": "lm.arpa"}}
# filters that need a downloaded (language id) or trained (quality) model: their drop rules are
# checked on made-up stats instead
NEEDS_MODEL = {"language_id", "chat_language_filter", "quality_classifier", "perplexity_filter"}
CHAT = {"chat_length_filter", "refusal_filter", "decontamination_filter", "relevance_filter", "chat_language_filter"}
# filters whose rules bound no numeric stat (a condition, a pattern, a list): nothing to declare
NO_BOUNDS: set[str] = {"regex_filter", "field_filter", "field_value_filter", "suffix_filter"}
# drop reasons that are not a bound on a numeric stat (every other reason must be)
UNBOUNDED = {
    "field_range_filter": {"missing_field", "not_numeric"},
    "gopher_repetition_filter": {"empty"},
    "fineweb_quality_filter": {"empty"},
    "c4_quality_filter": {"lorem_ipsum", "curly_bracket"},
    "stopwords_filter": {"unknown_language"},
    "language_id": {"language_not_allowed"},
    "chat_language_filter": {"language_not_allowed", "answered_in_another_language"},
    "url_filter": {"missing_url", "banned_domain", "banned_url", "banned_word", "banned_subword"},
}


def make(name: str, **params) -> Filter:
    cls = FILTERS[name]
    return cls(cls.Params(**{**REQUIRED.get(name, {}), **params}))


def _values(stat) -> np.ndarray:
    if isinstance(stat, (pa.Array, pa.ChunkedArray)):
        return stat.to_numpy(zero_copy_only=False)
    return np.asarray(stat)


def _sides(op: Filter) -> list[tuple[str, str, str]]:
    """(stat, parameter path, "lo" | "hi") for every bound the op declares, set or not."""
    out = []
    for stat, spec in type(op).bounds.items():
        out += [(stat, path, side) for path, side in zip(spec[:2], ("lo", "hi"), strict=True) if path]
    for stat, b in op.thresholds().items():
        out += [(stat, path, side) for path, side in ((b.lo_param, "lo"), (b.hi_param, "hi")) if path]
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------- declarations
def test_every_builtin_filter_declares_bounds():
    assert len(FILTERS) >= 17
    missing = [n for n, c in FILTERS.items() if is_builtin(c) and not c.bounds and n not in NO_BOUNDS]
    assert not missing, f"filters with no bounds: {missing}"


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_declared_paths_resolve_and_name_stats(name):
    cls = FILTERS[name]
    op = make(name)
    fields = cls.Params.model_fields
    for stat, spec in cls.bounds.items():
        assert stat in cls.stats, f"{name}: bound on unknown stat {stat!r}"
        assert len(spec) in (2, 3) and (spec[0] or spec[1]), f"{name}.{stat}: {spec!r}"
        if len(spec) == 3:
            assert isinstance(spec[2], bool)
        for path in spec[:2]:
            if path:
                assert path.split(".")[0] in fields, f"{name}: no parameter {path!r}"
                param_at(op.params, path)  # resolves on the defaults
    for stat, b in op.thresholds().items():
        assert isinstance(b, Bound) and (b.lo is not None or b.hi is not None)
        assert stat in cls.stats, f"{name}: threshold on unknown stat {stat!r}"
        for path, value in ((b.lo_param, b.lo), (b.hi_param, b.hi)):
            if path:
                assert path.split(".")[0] in fields
            if value is not None:
                assert path and float(param_at(op.params, path)) == value


def test_dict_parameter_paths():
    op = make("gopher_repetition_filter", top_n_grams={2: 0.2, 5: 0.07}, dup_n_grams={})
    t = op.thresholds()
    assert t["top_5_gram_char_frac"] == Bound(None, 0.07, None, "top_n_grams.5")
    assert param_at(op.params, "top_n_grams.5") == 0.07 and param_at(op.params, "top_n_grams.9") is None
    assert not any(k.startswith("dup_") and "gram" in k for k in t)


def test_switched_off_rules_have_no_threshold():
    assert make("text_length_filter").thresholds() == {}
    assert "mean_word_length" not in make("gopher_quality_filter", min_avg_word_length=None,
                                          max_avg_word_length=None).thresholds()
    assert make("quality_classifier", threshold=None).thresholds() == {}
    assert make("language_id", tag_only=True).thresholds() == {}
    assert set(make("language_id", score_key="p").thresholds()) == {"p"}
    assert set(make("quality_classifier", score_key="q").thresholds()) == {"q"}


# ----------------------------------------------------------------------------- corpora
EDGE_TEXTS = [
    "", " ", "\n\n\n", "a", "Hi.", "word word word", "the cat and the dog of that house have to be with us",
    "same line again\n" * 12,
    "First paragraph here.\n\nFirst paragraph here.\n\nFirst paragraph here.\n\nAnother one.",
    "# heading # more # tags # here", "wait... what... really... no...", "and then…\nit stopped…\nagain…\nfine.",
    "- one\n- two\n- three\n• four\n- five", "lorem ipsum dolor sit amet. consectetur adipiscing.",
    "function f() { return 1; }", "1234 5678 9012 !!! ??? $$$ %%%", "!!! ??? ... ;;;",
    "Der Fluss fließt ruhig durch das alte Dorf. Im Winter liegt viel Schnee auf den Bergen.",
    "委员会将于下周发布关于铁路状况的报告。", "emoji 😀😀😀 party 🎉", "a" * 600,
    "x\ty\tz\n\n\n\n\nshort\nlines\nhere", " ".join(flagged_words("en")[:4] + ["the", "and"]) * 3,
    "buy buy buy buy buy buy buy buy buy buy buy buy",
    " ".join(["The committee said that the river and the town have to be with the people of the valley."] * 6),
]


def _texts() -> list[str]:
    demo = [json.loads(x) for x in make_demo_records(300, seed=3) if x.startswith("{") and x.endswith("}")]
    return [r["text"] for r in demo if isinstance(r.get("text"), str)] + EDGE_TEXTS


TEXTS = _texts()
LANGS = ["en", "de", None, "xx", "fr", "en-GB"]


def text_batch() -> pa.Table:
    scores = [None if i % 11 == 0 else float("nan") if i % 13 == 0 else (i * 37 % 101) / 10 for i in range(len(TEXTS))]
    return pa.table({"text": TEXTS, "lang": [LANGS[i % len(LANGS)] for i in range(len(TEXTS))],
                     "score": pa.array(scores, pa.float64())})  # a numeric field (field_range_filter)


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
READERS = {"alpaca": chatfmt.from_alpaca, "sharegpt": chatfmt.from_sharegpt, "openai": chatfmt.from_openai}


def _m(*turns):
    return [{"role": r, "content": c} for r, c in turns]


def _conversations() -> list[list[dict]]:
    out = []
    for line in chat_records(60, seed=5):
        row = json.loads(line)
        try:
            out.append(READERS[chatfmt.detect(row)](row)["messages"])
        except (chatfmt.ChatFormatError, KeyError):
            continue
    return out + [
        [], _m(("user", "Only a question, no answer?")), _m(("user", "Hi"), ("assistant", "")),
        _m(("system", "Be brief."), ("user", "Explain tides"),
           ("assistant", "As an AI language model, I cannot. I'm unable to help, I cannot provide that.")),
        _m(("user", "Describe photosynthesis in plants, leaves, sunlight and water"),
           ("assistant", "Plants use sunlight, water and leaves for photosynthesis."),
           ("user", "And the animals?"), ("assistant", "Animals breathe.")),
        _m(("user", "Explain compound interest, savings, banks, money, growth, years"), ("assistant", "Bananas are yellow.")),
        _m(("user", LEAKED), ("assistant", "72")),
        _m(("user", LEAKED + " " + LEAKED), ("assistant", "As a language model, I'm just an AI.")),
    ]


def chat_batch() -> pa.Table:
    return pa.table({"messages": pa.array(_conversations(), MESSAGES)})


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("eval") / "eval.jsonl"
    rows = [{"question": LEAKED}, {"question": "Explain tides to a child."}, {"question": "Why does inflation matter?"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ----------------------------------------------------------------------------- consistency
def excused(op: Filter, batch: pa.Table, stats: dict) -> dict[str, np.ndarray]:
    """Rows that lie outside a bound yet are kept on purpose, per stat (documented exceptions)."""
    p = op.params
    if op.name == "fineweb_quality_filter" and p.line_punct_exclude_zero:
        return {"line_punct_ratio": _values(stats["line_punct_ratio"]) == 0}  # pages with no punctuated line
    if op.name == "stopwords_filter":  # rows whose language has no stop-word list
        langs = batch.column(p.lang_key).to_pylist() if p.lang == "auto" else [p.lang] * batch.num_rows
        unknown = np.array([lists_index(STOP_WORDS, x) < 0 for x in langs])
        return {"stop_words": unknown, "stop_word_ratio": unknown}
    return {}


def check_consistent(op: Filter, stats: dict, batch: pa.Table | None = None) -> np.ndarray:
    """Asserts that bounds and drop rules agree on these stats; returns the rows outside some bound."""
    reasons = {k: np.asarray(v, dtype=bool) for k, v in op.drop_reasons(stats).items()}
    n = len(_values(next(iter(stats.values()))))
    dropped = np.zeros(n, dtype=bool)
    for mask in reasons.values():
        dropped |= mask
    outside = np.zeros(n, dtype=bool)
    ok = excused(op, batch, stats) if batch is not None else {}
    sides = []  # each bound's below and above, less the rows excused from it
    for stat, b in op.thresholds().items():
        assert stat in stats, f"{op.name}: threshold on {stat!r}, which compute_stats does not return"
        below, above = b.masks(stats[stat])
        out = below | above
        kept = out & ~dropped & ~ok.get(stat, np.zeros(n, dtype=bool))
        assert not kept.any(), (f"{op.name}: rows {np.flatnonzero(kept)[:5].tolist()} lie outside {stat} {b} "
                                f"(values {_values(stats[stat])[kept][:5].tolist()}) but are kept")
        outside |= out
        sides += [side & ~ok.get(stat, np.zeros(n, dtype=bool)) for side in (below, above)]
    # each rule that is not UNBOUNDED is exactly the union of the bound sides it contains (so a rule
    # whose bound is missing or wrong shows, even when other bounds happen to cover its rows)
    for reason, mask in reasons.items():
        if reason in UNBOUNDED.get(op.name, ()):
            continue
        covered = np.zeros(n, dtype=bool)
        for side in sides:
            if not (side & ~mask).any():
                covered |= side
        stray = mask & ~covered
        assert not stray.any(), (f"{op.name}: rule {reason!r} drops rows {np.flatnonzero(stray)[:5].tolist()} "
                                 "that no declared bound accounts for")
    if not UNBOUNDED.get(op.name):
        assert (dropped == outside).all()
    return outside


def run_filter(op: Filter, batch: pa.Table) -> dict:
    if op.name not in NEEDS_MODEL:
        op.ensure_setup()
    return op.compute_stats(batch)


# url_filter on the text corpus read as URLs: its words are the URL words the soft rule counts
URL_ON_TEXT = {"url_key": "text", "soft_banned_words": ["the", "and", "of", "to"], "soft_word_threshold": 2}
TEXT_CASES = [
    ("text_length_filter", {"min_chars": 20, "max_chars": 400, "min_words": 5, "max_words": 60}),
    ("token_length_filter", {"min_tokens": 10, "max_tokens": 200}),
    ("alphanumeric_filter", {}), ("alphanumeric_filter", {"min_ratio": 0.5, "max_ratio": 0.85}),
    ("special_characters_filter", {}), ("special_characters_filter", {"min_ratio": 0.15, "max_ratio": 0.3}),
    ("gopher_quality_filter", {}),
    ("gopher_quality_filter", {"min_doc_words": 5, "max_doc_words": 150, "min_avg_word_length": 3.5,
                               "max_avg_word_length": 8, "max_symbol_word_ratio": 0.05, "max_bullet_lines_ratio": 0.5,
                               "max_ellipsis_lines_ratio": 0.2, "min_alpha_words_ratio": 0.7, "min_stop_words": 1}),
    ("gopher_repetition_filter", {}),
    ("gopher_repetition_filter", {"top_n_grams": {2: 0.1, 5: 0.3}, "dup_n_grams": {3: 0.05, 6: 0.2},
                                  "dup_line_frac": None, "dup_para_char_frac": 0.05}),
    ("fineweb_quality_filter", {}),
    ("fineweb_quality_filter", {"line_punct_thr": 0.5, "short_line_thr": 0.3, "char_duplicates_ratio": 0.1,
                                "new_line_ratio": 0.05}),
    ("fineweb_quality_filter", {"line_punct_thr": 0.6, "line_punct_exclude_zero": True}),
    ("c4_quality_filter", {}), ("c4_quality_filter", {"min_num_sentences": 2, "filter_curly_bracket": False}),
    ("stopwords_filter", {}), ("stopwords_filter", {"min_count": 5, "min_ratio": 0.3}),
    ("stopwords_filter", {"lang": "auto", "min_ratio": 0.2}),
    ("stopwords_filter", {"lang": "auto", "min_count": 3, "unknown_lang": "drop"}),
    ("flagged_words_filter", {}), ("flagged_words_filter", {"max_ratio": 0.0}),
    ("url_filter", {}), ("url_filter", URL_ON_TEXT),
    ("field_range_filter", {"min_value": 1}), ("field_range_filter", {"min_value": 2.5, "max_value": 7}),
    ("random_sample", {}), ("random_sample", {"fraction": 0.2}),
    ("unigram_logprob_filter", {}), ("unigram_logprob_filter", {"min_logprob": -9.0}),
    ("unigram_logprob_filter", {"language": "auto", "min_logprob": -12.0}),  # rows without a list: NaN, kept
    ("line_length_filter", {}),
    ("line_length_filter", {"min_avg_line_length": 40, "max_avg_line_length": 300, "min_max_line_length": 20,
                            "max_max_line_length": 1000}),
    ("c4_paragraph_filter", {}), ("c4_paragraph_filter", {"min_paragraphs": 2, "min_paragraph_len": 100}),
    ("character_repetition_filter", {}),
    ("character_repetition_filter", {"rep_len": 5, "min_ratio": 0.01, "max_ratio": 0.2}),
    ("word_repetition_filter", {}), ("word_repetition_filter", {"rep_len": 3, "max_ratio": 0.1}),
]
CHAT_CASES = [
    ("chat_length_filter", {}),
    ("chat_length_filter", {"min_prompt_tokens": 5, "max_prompt_tokens": 20, "min_response_tokens": 3,
                            "max_response_tokens": 25}),
    ("refusal_filter", {}), ("refusal_filter", {"max_phrases": 1}),
    ("decontamination_filter", {"ngram": 3}), ("decontamination_filter", {"ngram": 3, "max_hits": 4}),
    ("relevance_filter", {}), ("relevance_filter", {"min_coverage": 0.5, "min_prompt_words": 2}),
]


def test_cases_cover_every_filter_that_runs_without_a_model():
    assert {n for n, _ in TEXT_CASES + CHAT_CASES} == {n for n, c in FILTERS.items() if is_builtin(c)} - NEEDS_MODEL - NO_BOUNDS


@pytest.fixture(scope="module")
def batches():
    return {"text": text_batch(), "chat": chat_batch()}


def _build(name, params, eval_set):
    if name == "decontamination_filter":
        params = {"path": eval_set, **params}
    return make(name, **params)


@pytest.mark.parametrize("name,params", TEXT_CASES + CHAT_CASES, ids=lambda x: x if isinstance(x, str) else "")
def test_bounds_match_drops_on_computed_stats(name, params, batches, eval_set):
    batch = batches["chat" if name in CHAT else "text"]
    op = _build(name, params, eval_set)
    stats = run_filter(op, batch)
    outside = check_consistent(op, stats, batch)
    assert op.thresholds()
    if params:  # the non-default thresholds are chosen to bite
        assert 0 < outside.sum() < batch.num_rows


def _cast(cls, path: str, v: float):
    if "." in path:
        return float(v)
    ann = cls.Params.model_fields[path].annotation
    return float(v) if float in (ann, *typing.get_args(ann)) else int(round(v))


def _tuned(op: Filter, stats: dict, q_lo: float, q_hi: float) -> dict:
    """The op's parameters with every bound moved to a quantile of the stat's real values (so rows
    lie exactly on a bound)."""
    data = op.params.model_dump()
    for stat, path, side in _sides(op):
        vals = _values(stats[stat]).astype(np.float64)
        if np.isnan(vals).all():
            continue
        v = _cast(type(op), path, float(np.nanquantile(vals, q_lo if side == "lo" else q_hi, method="nearest")))
        head, _, key = path.partition(".")
        if key:
            data[head] = {**data[head], int(key): v}
        else:
            data[head] = v
    return data


@pytest.mark.parametrize("name", sorted({n for n, _ in TEXT_CASES + CHAT_CASES}))
def test_bounds_match_drops_with_thresholds_on_the_data(name, batches, eval_set):
    batch = batches["chat" if name in CHAT else "text"]
    params = dict(CHAT_CASES)["decontamination_filter"] if name == "decontamination_filter" else {}
    if name == "stopwords_filter":
        params = {"lang": "auto"}
    if name == "url_filter":
        params = URL_ON_TEXT
    base = _build(name, params, eval_set)
    stats = run_filter(base, batch)
    built = 0
    for q_lo, q_hi in ((0.1, 0.9), (0.3, 0.6), (0.5, 0.5), (0.0, 1.0)):
        try:
            op = type(base)(type(base).Params(**_tuned(base, stats, q_lo, q_hi)))
        except ValidationError:
            continue
        built += 1
        check_consistent(op, run_filter(op, batch), batch)
    assert built >= 2


# ----------------------------------------------------------------------------- property tests
@settings(max_examples=60)
@given(texts=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40), min_size=1, max_size=12),
       chars=st.tuples(st.none() | st.integers(0, 40), st.none() | st.integers(0, 40)),
       words=st.tuples(st.none() | st.integers(0, 8), st.none() | st.integers(0, 8)))
def test_text_length_outside_is_exactly_dropped(texts, chars, words):
    def ordered(pair):
        lo, hi = pair
        return (min(lo, hi), max(lo, hi)) if lo is not None and hi is not None else (lo, hi)

    (cl, ch), (wl, wh) = ordered(chars), ordered(words)
    op = make("text_length_filter", min_chars=cl, max_chars=ch, min_words=wl, max_words=wh)
    stats = op.compute_stats(pa.table({"text": texts}))
    outside = check_consistent(op, stats)
    assert (outside == ~op.keep(stats)).all()


@settings(max_examples=60)
@given(data=st.data())
def test_text_length_bounds_at_the_data(data):
    """Thresholds equal to values the rows have: a value on a bound is kept."""
    op0 = make("text_length_filter")
    stats = op0.compute_stats(pa.table({"text": TEXTS}))
    chars, words = sorted(set(stats["num_chars"].to_pylist())), sorted(set(stats["num_words"].to_pylist()))
    cl, ch = sorted(data.draw(st.lists(st.sampled_from(chars), min_size=2, max_size=2)))
    wl, wh = sorted(data.draw(st.lists(st.sampled_from(words), min_size=2, max_size=2)))
    op = make("text_length_filter", min_chars=cl, max_chars=ch, min_words=wl, max_words=wh)
    outside = check_consistent(op, stats)
    c, w = np.asarray(stats["num_chars"]), np.asarray(stats["num_words"])
    assert (~outside == ((c >= cl) & (c <= ch) & (w >= wl) & (w <= wh))).all()


SCORES = st.sampled_from([0.0, 0.25, 0.5, 0.65, 0.9, 1.0]) | st.floats(0, 1)
LANG_CODES = st.sampled_from(["en", "de", "fr", ""])


@settings(max_examples=60)
@given(rows=st.lists(st.tuples(LANG_CODES, SCORES), min_size=1, max_size=20), min_score=SCORES,
       languages=st.lists(LANG_CODES.filter(bool), max_size=2), score_key=st.sampled_from(["lang_score", "p"]))
def test_language_id_rule_on_made_up_stats(rows, min_score, languages, score_key):
    op = make("language_id", min_score=min_score, languages=languages, score_key=score_key)
    stats = {"lang": pa.array([r[0] for r in rows], pa.string()), score_key: pa.array([r[1] for r in rows])}
    check_consistent(op, stats)


@settings(max_examples=60)
@given(scores=st.lists(SCORES, min_size=1, max_size=20), threshold=st.none() | SCORES,
       score_key=st.sampled_from(["quality_score", "q"]))
def test_quality_classifier_rule_on_made_up_stats(scores, threshold, score_key):
    op = make("quality_classifier", threshold=threshold, score_key=score_key)
    stats = {score_key: pa.array(scores, pa.float64())}
    outside = check_consistent(op, stats)
    assert (outside == ~op.keep(stats)).all()


@settings(max_examples=60)
@given(rows=st.lists(st.tuples(LANG_CODES, SCORES, LANG_CODES, SCORES), min_size=1, max_size=20), min_score=SCORES,
       languages=st.lists(LANG_CODES.filter(bool), max_size=2), same=st.booleans())
def test_chat_language_rule_on_made_up_stats(rows, min_score, languages, same):
    op = make("chat_language_filter", min_score=min_score, languages=languages, same_language=same)
    cols = list(zip(*rows, strict=True))
    stats = {"prompt_lang": pa.array(cols[0], pa.string()), "prompt_lang_score": pa.array(cols[1], pa.float64()),
             "response_lang": pa.array(cols[2], pa.string()), "response_lang_score": pa.array(cols[3], pa.float64())}
    outside = check_consistent(op, stats)
    score_rule = op.drop_reasons(stats)["language_score_too_low"]
    assert (outside == score_rule).all()  # min(prompt, response) < min_score: either side under it


@settings(max_examples=60)
@given(ppl=st.lists(st.sampled_from([0.0, 10.0, 1500.0, 1500.1]) | st.floats(0, 1e5), min_size=1, max_size=20),
       max_ppl=st.sampled_from([10.0, 1500.0]) | st.floats(0.1, 1e5))
def test_perplexity_rule_on_made_up_stats(ppl, max_ppl):
    op = make("perplexity_filter", max_ppl=max_ppl)
    stats = {"perplexity": pa.array(ppl, pa.float64())}
    outside = check_consistent(op, stats)
    assert (outside == ~op.keep(stats)).all()
