"""The report builds for every shipped recipe, after `run` and after `analyze`, and every chart in
it has data (drawn marks): checked in the HTML, and in headless Chromium where it is installed."""

from __future__ import annotations

import re

import pytest

from tests.pipeline.test_report import _browser_missing, chromium, open_report
from thresher.pipeline.analyze import analysis_recipe
from thresher.pipeline.recipe import load_recipe, shipped_recipes
from thresher.pipeline.run import run

NEEDS_LID = {"fineweb", "fineweb-edu", "gopher", "c4", "multilingual"}  # language_id: the lid.176 model is downloaded
NEEDS_LLM = {"dpo-synthetic": "_judge_server", "augment-instructions": "_augment_server"}
EMBEDS = {"fineweb-edu"}  # embeds every row (quality classifier, semantic dedup): minutes on 2 cores


def _param(name: str):
    marks = [pytest.mark.network] if name in NEEDS_LID else []
    if name in NEEDS_LLM or name in EMBEDS:
        marks.append(pytest.mark.slow)
    return pytest.param(name, marks=marks)


def _small_input(tmp_path) -> list[str]:
    """The first 300 rows of the quickstart demo: a recipe that embeds every row runs in a minute."""
    from thresher.pipeline.demo import write_demo

    demo = write_demo(tmp_path / "demo.jsonl")
    small = tmp_path / "demo-300.jsonl"
    small.write_text("".join(demo.read_text(encoding="utf-8").splitlines(keepends=True)[:300]), encoding="utf-8")
    return [str(small)]


def _use_small_quality_model(tmp_path, *recipes) -> None:
    """Train a small embedding quality model and point the recipes' quality_classifier at it."""
    from tests.operators.test_quality_embedding import _train_files
    from thresher.operators.filter.quality_training import TrainConfig, train_quality

    pos, neg = _train_files(tmp_path, 40)
    model = tmp_path / "quality.npz"
    train_quality(TrainConfig(model_type="embedding-logreg", positive=[{"path": str(pos)}],
                              negative=[{"path": str(neg)}], output=str(model), eval_cv=0))
    for recipe in recipes:
        for spec in recipe.ops:
            if spec.name == "quality_classifier":
                spec.params = spec.params.model_copy(update={"model_path": str(model)})


def charts(html: str) -> dict[str, int]:
    """data-chart -> marks drawn, for every chart of a report."""
    out = {}
    for m in re.finditer(r'<svg[^>]*class="chart"[^>]*data-chart="([^"]+)"[^>]*>(.*?)</svg>', html, re.S):
        out[m.group(1)] = len(re.findall(r'class="[^"]*\bmark\b', m.group(2)))
    return out


@pytest.mark.parametrize("name", [_param(n) for n in sorted(shipped_recipes())])
def test_report_after_run_and_analyze_for_every_shipped_recipe(name, tmp_path, monkeypatch):
    import contextlib

    server = contextlib.nullcontext()
    if name in NEEDS_LLM:
        from tests.operators import test_chat

        server = getattr(test_chat, NEEDS_LLM[name])()
    with server as srv:
        if srv is not None:
            monkeypatch.setenv("THRESHER_LLM_BASE_URL", srv.url)
        inputs = _small_input(tmp_path) if name in EMBEDS else None
        ran_recipe, analysed = load_recipe(name, inputs=inputs, output=str(tmp_path / "run")), load_recipe(name, inputs=inputs)
        if name in EMBEDS:  # its builtin quality model is trained on the machine: a small one stands in
            _use_small_quality_model(tmp_path, ran_recipe, analysed)
        ran = run(ran_recipe)
        analysis_recipe(analysed, output=str(tmp_path / "an"), tokens=None, llm=True)
        run(analysed)
    reports = {}
    for kind in ("run", "an"):
        html = (tmp_path / kind / "report.html").read_text(encoding="utf-8")
        drawn = charts(html)
        assert drawn and all(n >= 1 for n in drawn.values()), (kind, drawn)
        assert "funnel" in drawn
        for key in ran.ledger.entries:  # every op in the funnel
            assert key in html, (kind, key)
        reports[kind] = tmp_path / kind / "report.html"
    missing = _browser_missing()
    if missing is None:
        with chromium() as b:
            for path in reports.values():
                open_report(b.new_page(), path)  # no console errors, no requests, every chart has marks
