"""The report builds for every shipped recipe, after `run` and after `analyze`, and every chart in
it has data (drawn marks): checked in the HTML, and in headless Chromium where it is installed."""

from __future__ import annotations

import re

import pytest

from tests.pipeline.test_report import _browser_missing, chromium, open_report
from thresher.pipeline.analyze import analysis_recipe
from thresher.pipeline.recipe import load_recipe, shipped_recipes
from thresher.pipeline.run import run

NEEDS_LID = {"fineweb", "gopher", "c4", "multilingual"}  # language_id: the lid.176 model is downloaded
NEEDS_LLM = {"dpo-synthetic": "_judge_server", "augment-instructions": "_augment_server"}


def _param(name: str):
    marks = [pytest.mark.network] if name in NEEDS_LID else []
    if name in NEEDS_LLM:
        marks.append(pytest.mark.slow)
    return pytest.param(name, marks=marks)


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
        ran = run(load_recipe(name, output=str(tmp_path / "run")))
        analysed = load_recipe(name)
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
