"""``thresher analyze``: every filter's stats on every row, by the same code path as ``run``."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import make_recipe, read_output, write_jsonl
from thresher.pipeline.analyze import Options, analysis_recipe, suggestions
from thresher.pipeline.cli import main
from thresher.pipeline.demo import write_demo
from thresher.pipeline.recipe import load_recipe
from thresher.pipeline.run import run

FILTERS = [
    {"whitespace_normalize": {}},
    {"gopher_repetition_filter": {}},
    {"gopher_quality_filter": {"min_doc_words": 30}},
    {"text_length_filter": {"min_words": 40, "max_words": 600}},
    {"special_characters_filter": {}},
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo(tmp_path_factory.mktemp("demo") / "demo.jsonl")


def _analyze(recipe, out, **kw):
    options = kw.pop("options", None)
    analysis_recipe(recipe, output=str(out), options=options, **kw)
    result = run(recipe)
    return result, pl.read_parquet(out / "stats.parquet")


def test_analyze_and_run_give_equal_stats(demo, tmp_path):
    """A kept row's stats in a run (keep_stats) equal its stats in the analysis, stat by stat."""
    ran = run(make_recipe([demo], tmp_path / "run", FILTERS, output={"keep_stats": True},
                          policy={"max_quarantine_fraction": 0.5}))
    rows = read_output(tmp_path / "run")
    assert ran.output_rows == len(rows) > 100
    _, stats = _analyze(make_recipe([demo], tmp_path / "an", FILTERS, policy={"max_quarantine_fraction": 0.5}),
                        tmp_path / "an", tokens=None)
    by_id = {r["id"]: r for r in stats.iter_rows(named=True)}
    compared = 0
    for row in rows:
        mine = by_id[row["id"]]
        for op_key, values in row["__stats__"].items():
            for stat, v in values.items():
                other = mine[f"{op_key}.{stat}"]
                if isinstance(v, float) and math.isnan(v):
                    assert other is None or math.isnan(other)
                else:
                    assert other == v, (row["id"], op_key, stat)
                compared += 1
        assert all(mine[f"{k}.reason"] is None for k in row["__stats__"])  # kept: no op flags it
    assert compared > 1000


def test_analysis_drops_nothing_and_its_funnel_is_the_runs(demo, tmp_path):
    """Every readable row is analysed; each op flags rows without dropping them; the rows each op is the
    first to flag are exactly what a run of the same recipe drops there (no global op in this recipe)."""
    ran = run(make_recipe([demo], tmp_path / "run", FILTERS, policy={"max_quarantine_fraction": 0.5}))
    result, stats = _analyze(make_recipe([demo], tmp_path / "an", FILTERS, policy={"max_quarantine_fraction": 0.5}),
                             tmp_path / "an", tokens=None)
    ledger = json.loads((tmp_path / "an" / "ledger.json").read_text())
    assert ledger["mode"] == "analyze" and ledger["balanced"]
    read = ledger["ops"]["read"]
    assert stats.height == result.output_rows == read["rows_out"] == 2000
    assert not (tmp_path / "an" / "data").exists()
    summary = json.loads((tmp_path / "an" / "analysis.json").read_text())
    run_ledger = ran.ledger.to_dict()["ops"]
    for op in summary["ops"]:
        e = ledger["ops"][op["key"]]
        assert e["rows_in"] == e["rows_out"] == 2000 and not e["dropped"]  # nothing dropped
        assert sum(e.get("flagged", {}).values()) == op["flagged"] == stats[f"{op['key']}.reason"].is_not_null().sum() \
            if f"{op['key']}.reason" in stats.columns else op["flagged"] == 0
        assert op["first"] == sum(run_ledger[op["key"]]["dropped"].values()), op["key"]
    # lengths per row: characters of the text the filters saw
    assert (stats["chars"] == stats["text_length_filter.num_chars"]).all()
    assert stats["words"].min() >= 0 and stats["lines"].min() >= 1


def test_suggest_writes_a_valid_recipe_whose_drop_is_the_predicted_one(demo, tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        "# my recipe\n"
        f"input:\n  paths: [{demo}]\n"
        f"output:\n  path: {tmp_path / 'out'}  # where\n"
        "policy: {max_quarantine_fraction: 0.5}\n"
        "process:\n"
        "  - text_length_filter: {min_words: 5}  # keep this comment\n"
        "  - gopher_quality_filter: {}\n", encoding="utf-8")
    out = tmp_path / "an"
    assert main(["analyze", str(recipe_file), "--output", str(out), "--suggest", "--keep", "0.9", "--no-tokens",
                 "-q"]) == 0
    summary = json.loads((out / "analysis.json").read_text())
    suggested = out / "suggested.yaml"
    text = suggested.read_text()
    assert "# my recipe" in text and "# keep this comment" in text  # the user's file, edited in place
    assert summary["diff"].startswith("---") and "+  - text_length_filter:" in summary["diff"]
    assert main(["validate", str(suggested)]) == 0
    new = load_recipe(str(suggested))
    tl = [s for s in summary["suggestions"] if s["op"] == "text_length_filter" and s["stat"] == "num_words"][0]
    assert new.ops[0].params.min_words == tl["quantile"]["lo"]
    assert new.ops[0].params.max_words == tl["quantile"]["hi"]
    assert tl["quantile"]["drop_share"] <= 0.1 + 1e-9
    # running the suggested recipe drops at its first op exactly the share the suggestion predicted
    ran = run(load_recipe(str(suggested), output=str(tmp_path / "run2")))
    dropped = sum(ran.ledger.to_dict()["ops"]["text_length_filter"]["dropped"].values())
    assert dropped == round(tl["quantile"]["drop_share"] * summary["rows"])


@given(values=st.lists(st.integers(0, 10_000), min_size=1, max_size=300),
       keep=st.floats(0.5, 0.999), two_sided=st.booleans())
def test_quantile_suggestion_keeps_at_least_the_share_asked(values, keep, two_sided):
    from thresher.pipeline.ops import OpContext
    from thresher.pipeline.registry import get_op

    cls = get_op("text_length_filter")
    params = cls.Params(min_words=1, max_words=100_000 if two_sided else None)
    op = cls(params, OpContext(key="tl"))
    lf = pl.LazyFrame({"tl.num_words": values})
    (s,) = [x for x in suggestions(lf, ["tl.num_words"], len(values), [op], Options(True, keep=keep))
            if x["stat"] == "num_words"]
    lo, hi = s["quantile"]["lo"], s["quantile"]["hi"]
    v = np.array(values)
    kept = ((v >= lo) & ((v <= hi) if hi is not None else True)).mean()
    assert kept >= keep - 1e-9
    assert math.isclose(1 - kept, s["quantile"]["drop_share"], abs_tol=1e-6)
    assert isinstance(lo, int)  # an int parameter gets a whole number


def test_analyze_chat_rows_measures_turns(tmp_path):
    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": "hello " * (i + 1)},
                                         {"role": "assistant", "content": "answer words here " * (i % 5 + 1)}]}
            for i in range(40)]
    src = write_jsonl(tmp_path / "chat.jsonl", rows)
    recipe = make_recipe([src], tmp_path / "run", [{"chat_length_filter": {"min_response_tokens": 6}}],
                         input={"text_key": None})
    _, stats = _analyze(recipe, tmp_path / "an", tokens="cl100k_base")
    assert stats.height == 40
    first = stats.filter(pl.col("id") == "c0").row(0, named=True)
    assert first["words"] == 1 + 3  # "hello" + "answer words here"
    assert first["tokens"] > 0
    flagged = stats["chat_length_filter.reason"].is_not_null()
    assert 0 < flagged.sum() < 40
    assert (flagged == (stats["chat_length_filter.response_tokens"] < 6)).all()
    samples = [json.loads(x) for f in (tmp_path / "an" / "trace").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert samples and all(s["content"]["messages"][0]["role"] == "user" for s in samples)


def test_analyze_stops_before_paid_llm_ops(tmp_path, capsys):
    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(5)]
    src = write_jsonl(tmp_path / "chat.jsonl", rows)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(json.dumps({
        "input": {"paths": [str(src)], "text_key": None}, "output": {"path": str(tmp_path / "out")},
        "process": [{"chat_length_filter": {}},
                    {"llm_respond": {"llm": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}}]}))
    assert main(["analyze", str(recipe_file), "--output", str(tmp_path / "an"), "--no-tokens"]) == 0
    err = capsys.readouterr().err
    assert "llm_respond" in err and "--llm" in err
    ledger = json.loads((tmp_path / "an" / "ledger.json").read_text())
    assert "llm_respond" not in ledger["ops"]


def test_profile_counts_every_row_each_filter_saw(demo, tmp_path):
    """profile.json: each filter stat's histogram holds the rows that op saw; ``outside`` counts the
    rows past each threshold exactly (here one rule per stat, so they are the op's drops)."""
    process = [{"text_length_filter": {"min_words": 40, "max_words": 300}}, {"gopher_quality_filter": {}}]
    ran = run(make_recipe([demo], tmp_path / "run", process, policy={"max_quarantine_fraction": 0.5}))
    profile = json.loads((tmp_path / "run" / "profile.json").read_text())
    led = ran.ledger.to_dict()["ops"]
    for key in ("text_length_filter", "gopher_quality_filter"):
        for sketch in profile["ops"][key]["stats"].values():
            assert sketch["n"] + sketch["nulls"] == led[key]["rows_in"]
    tl = profile["ops"]["text_length_filter"]
    assert tl["thresholds"]["num_words"]["lo"] == 40 and tl["thresholds"]["num_words"]["hi_param"] == "max_words"
    out = tl["outside"]["num_words"]
    assert out["below"] + out["above"] == sum(led["text_length_filter"]["dropped"].values())
    assert profile["corpus"]["input"]["chars"]["n"] == led["read"]["rows_out"]
    assert profile["corpus"]["output"]["chars"]["n"] == ran.output_rows
    files = json.loads((tmp_path / "run" / "_thresher.json").read_text())["files"]
    assert "profile.json" in files


def test_dedup_cluster_sizes_reach_the_profile(tmp_path):
    rows = [{"id": str(i), "text": f"text number {i % 7} " * 5} for i in range(30)]  # 7 clusters of 4-5
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    ran = run(make_recipe([src], tmp_path / "out", [{"exact_dedup": {}}]))
    profile = json.loads((tmp_path / "out" / "profile.json").read_text())
    sizes = {int(k): v for k, v in profile["ops"]["exact_dedup"]["distributions"]["cluster_size"].items()}
    assert sizes == {5: 2, 4: 5}
    assert sum((s - 1) * n for s, n in sizes.items()) == ran.ledger.to_dict()["ops"]["exact_dedup"]["dropped"]["exact_duplicate"]


@pytest.mark.slow
def test_analysis_on_ray_equals_local(demo, tmp_path, local_ray):
    """The same stats, flags, funnel and profile on Ray as locally (several shards, a global op)."""
    process = [*FILTERS, {"exact_dedup": {}}]
    kw = {"policy": {"max_quarantine_fraction": 0.5}, "input": {"shard_size_mb": 0.5}}
    _, local = _analyze(make_recipe([demo], tmp_path / "r1", process, workers=2, **kw), tmp_path / "l", tokens=None)
    _, on_ray = _analyze(make_recipe([demo], tmp_path / "r2", process, executor={"type": "ray", "workers": 2}, **kw),
                         tmp_path / "r", tokens=None)
    assert local.sort("id").equals(on_ray.sort("id"), null_equal=True)
    a, b = (json.loads((tmp_path / d / "analysis.json").read_text()) for d in ("l", "r"))
    assert a["ops"] == b["ops"]
    pa_, pb = (json.loads((tmp_path / d / "profile.json").read_text()) for d in ("l", "r"))
    for key in ("gopher_quality_filter", "text_length_filter"):  # same buckets (sums may differ in the last bit)
        sa, sb = pa_["ops"][key]["stats"], pb["ops"][key]["stats"]
        assert sa.keys() == sb.keys()
        assert all((sa[k]["n"], sa[k]["pos"], sa[k]["neg"]) == (sb[k]["n"], sb[k]["pos"], sb[k]["neg"]) for k in sa)
    assert pa_["ops"]["exact_dedup"]["distributions"] == pb["ops"]["exact_dedup"]["distributions"]


@pytest.mark.network
def test_lang_adds_language_measurement(demo, tmp_path):
    """--lang: language_id (tag only) measures every row's language; nothing is flagged for it."""
    _, stats = _analyze(make_recipe([demo], tmp_path / "r", [{"text_length_filter": {"min_words": 40}}],
                                    policy={"max_quarantine_fraction": 0.5}), tmp_path / "an", tokens=None, lang=True)
    assert stats["language_id.lang"].null_count() == 0
    assert "language_id.reason" not in stats.columns or stats["language_id.reason"].is_not_null().sum() == 0
    profile = json.loads((tmp_path / "an" / "profile.json").read_text())
    langs = profile["corpus"]["output"]["lang"]
    assert sum(langs.values()) == stats.height and max(langs, key=langs.get) == "en"


def test_token_sample_is_seeded_by_id_and_estimates_the_total(demo, tmp_path):
    """Tokens are counted on a share of the rows picked by id hash — the same rows whatever the
    workers — and the total is estimated from the sample's tokens per character; counting every row
    gives the exact figure, which the estimate lands near."""
    process = [{"whitespace_normalize": {}}, {"gopher_quality_filter": {"min_doc_words": 30}}]
    outs = {}
    for workers, share in ((1, 0.2), (2, 0.2), (2, 1.0)):
        out = tmp_path / f"an-{workers}-{share}"
        _analyze(make_recipe([demo], out, process, workers=workers, policy={"max_quarantine_fraction": 0.5}),
                 out, tokens="cl100k_base", token_share=share)
        outs[(workers, share)] = (pl.read_parquet(out / "stats.parquet").sort("id"),
                                  json.loads((out / "analysis.json").read_text())["tokens"])
    full, full_summary = outs[(2, 1.0)]
    one, one_summary = outs[(1, 0.2)]
    two, _ = outs[(2, 0.2)]
    assert one["tokens"].to_list() == two["tokens"].to_list()  # the same sample on 1 and 2 workers
    counted = one["tokens"].is_not_null()
    assert 0.1 < counted.mean() < 0.3  # about the share asked for
    # sampled rows carry the exact count (the same as counting every row gives), the others none
    assert (one.filter(counted)["tokens"] == full.filter(counted)["tokens"]).all()
    assert full["tokens"].null_count() == 0
    ratio = (full["chars"] / full["tokens"]).filter(full["tokens"] > 20)
    assert 2.5 < ratio.median() < 6  # English prose: about four characters per cl100k token
    assert full_summary["estimated_total"] == full_summary["counted"] == int(full["tokens"].sum())
    assert one_summary["rows_counted"] == int(counted.sum())
    assert abs(one_summary["estimated_total"] / full_summary["estimated_total"] - 1) < 0.1
