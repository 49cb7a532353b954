"""report.html: one self-contained page per run (or analysis), checked on real outputs of real
recipes and, where Debian's chromium and playwright are installed, in a real headless browser: no
console errors, no network requests, every chart drawn with marks, untrusted row text inert, and
a 1M-row run's page small and fast (its histograms come from sketches, not rows).

``THRESHER_DOCS_SCREENSHOT=1`` also writes docs/report.png from the browser test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_jsonl
from thresher.pipeline.cli import main
from thresher.pipeline.profile import Profile, Sketch
from thresher.pipeline.report import write_report

XSS = "<script>window.__pwned=1</script>"
DOCS_PNG = Path(__file__).resolve().parents[2] / "docs" / "report.png"


# ------------------------------------------------------------------------------- fixtures
def run_output(argv: list[str], out: Path) -> Path:
    """``thresher run ARGV --output OUT -q``: a real output, with the profile.json and report.html
    the engine writes."""
    assert main(["run", *argv, "--output", str(out), "-q", "--workers", "1"]) == 0
    assert (out / "profile.json").is_file() and (out / "report.html").is_file()
    return out


def web_docs(n: int = 400) -> list[dict]:
    """Documents of varied length, with duplicates, and three too short to keep: one of them is
    markup that must stay text in the report."""
    import random

    rng = random.Random(3)
    words = ["river", "town", "library", "bridge", "museum", "harbour", "garden", "festival", "winter", "summer",
             "letters", "canal", "mill"]
    rows = []
    for i in range(n):
        k = int(rng.lognormvariate(3.5, 0.7)) + 5
        rows.append({"id": f"w{i:04d}", "text": " ".join(rng.choice(words) for _ in range(k))})
    rows += [dict(rows[i], id=f"dup{i}") for i in range(0, 60, 3)]
    rows += [{"id": "short1", "text": "too short"}, {"id": "short2", "text": "three words only"},
             {"id": "xss", "text": XSS}]
    return rows


def chat_rows() -> list[dict]:
    rows = []
    for i in range(40):
        rows.append({"id": f"c{i}", "messages": [
            {"role": "user", "content": f"How do canals in town {i} stay full in summer?"},
            {"role": "assistant", "content": "Locks hold the water back, and feeder reservoirs top the canal up "
                                             f"whenever boats pass through, as in town {i}."}]})
    for i in range(3):
        rows.append({"id": f"r{i}", "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": f"{XSS} question {i}"},
            {"role": "assistant", "content": "As an AI language model, I cannot help with that."}]})
    return rows


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Real outputs: the quickstart recipe; a web-like corpus with markup in a dropped row; a chat
    set through the shipped sft-clean recipe's filters, with a refusal carrying markup."""
    base = tmp_path_factory.mktemp("report")
    quick = run_output(["quickstart"], base / "quickstart")
    src = write_jsonl(base / "in" / "web.jsonl", web_docs())
    recipe = base / "web.yaml"
    recipe.write_text(
        "name: web-report\ninput: {paths: [PLACEHOLDER], text_key: text, id_key: id}\n"
        "output: {path: out, format: jsonl}\nexecutor: local\nseed: 1\nprocess:\n"
        "  - text_length_filter: {min_words: 5, max_words: 120}\n  - exact_dedup: {}\n".replace("PLACEHOLDER", str(src)))
    web = run_output([str(recipe)], base / "web")
    chat_src = write_jsonl(base / "in" / "chat.jsonl", chat_rows())
    chat = run_output(["sft-clean", "--input", str(chat_src)], base / "chat")
    for out in (quick, web, chat):
        assert main(["report", str(out)]) == 0
    return {"quickstart": quick, "web": web, "chat": chat}


# ------------------------------------------------------------------------------- without a browser
def test_minimal_output_ledger_only(tmp_path):
    led = {"ops": {"read": {"op": "read", "index": -1, "rows_in": 3, "rows_out": 3, "dropped": {}, "quarantined": {},
                            "seconds": 0.1}},
           "totals": {"input": 3, "output": 3, "dropped": 0, "quarantined": 0, "created": 0}}
    (tmp_path / "ledger.json").write_text(json.dumps(led))
    page = write_report(tmp_path).read_text()
    assert 'data-chart="funnel"' in page and "<script" not in page
    # unreadable parts are left out with a note, never an error
    (tmp_path / "profile.json").write_text("{not json")
    (tmp_path / "trace").mkdir()
    (tmp_path / "trace" / "00-x.jsonl").write_text('{"id": 1, "reason": "r", "text": "t"}\nnot json\n')
    page = write_report(tmp_path).read_text()
    assert "profile.json: not readable" in page and "reason <b>r</b>" in page
    (tmp_path / "ledger.json").unlink()
    assert write_report(tmp_path).is_file()  # not even a ledger: still a page


def test_report_command_and_ownership(outputs, capsys, tmp_path):
    out = outputs["quickstart"]
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    assert "report.html" in json.loads((out / "_thresher.json").read_text())["files"]
    page = (out / "report.html").read_text()
    for key in ("read", "unicode_normalize", "whitespace_normalize", "text_length_filter", "exact_dedup"):
        assert f">{key}<" in page
    assert 'class="threshold"' in page and "min_words = 20: drops 119 (" in page
    assert "too_few_words" in page and "exact_duplicate" in page
    assert main(["report", str(tmp_path / "nothing")]) == 2  # not an output: a clear error
    assert "ledger.json" in capsys.readouterr().err


def test_a_run_replaces_an_output_holding_its_report_and_plan(outputs, tmp_path):
    out = shutil.copytree(outputs["web"], tmp_path / "web")
    (out / "plan.json").write_text("{}")
    from thresher.pipeline import outdir

    outdir.add_owned(out, ["plan.json"])
    recipe = json.loads((out / "ledger.json").read_text())["run"]["source"]
    assert main(["run", recipe, "--output", str(out), "-q"]) == 0
    assert not (out / "plan.json").exists()


def test_untrusted_text_is_escaped(outputs):
    for name in ("web", "chat"):
        page = (outputs[name] / "report.html").read_text()
        assert XSS not in page and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
        assert "<script" not in page


def test_capacity_plan_on_the_output(outputs, tmp_path, capsys):
    out = shutil.copytree(outputs["quickstart"], tmp_path / "q")
    assert main(["plan", "train", "--data", str(out), "--model", "llama-3-8b", "--gpu", "h100-sxm", "--json"]) == 0
    json.loads(capsys.readouterr().out)  # stdout stays pure JSON
    plan = json.loads((out / "plan.json").read_text())
    assert plan["command"] == "train" and set(plan["charts"]) == {"memory", "roofline"}
    assert {"plan.json", "report.html"} <= set(json.loads((out / "_thresher.json").read_text())["files"])
    page = (out / "report.html").read_text()
    assert 'id="plan"' in page and page.count('data-chart="plan:') == 2
    for chart in re.findall(r'<svg class="chart mpl".*?</svg>', page, re.S):
        assert 'class="mark"' in chart
    # serving: the last plan given is the one shown
    assert main(["plan", "serve", "--data", str(out), "--model", "llama-3-8b", "--gpu", "h100-sxm",
                 "--prompt-field", "text", "--response-field", "text"]) == 0
    assert json.loads((out / "plan.json").read_text())["command"] == "serve"
    page = (out / "report.html").read_text()
    assert "thresher plan serve --data" in page and page.count('data-chart="plan:') == 2
    assert len(page.encode()) < 300_000


# ------------------------------------------------------------------------------- in a browser
def _browser_missing() -> str | None:
    if shutil.which("chromium") is None:
        return "no chromium on PATH (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; no browser download needed)"
    return None


browser = pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")


@contextlib.contextmanager
def chromium():
    """Debian's chromium, headless, driven by playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900):
    with chromium() as b:
        yield b.new_page(viewport={"width": width, "height": height})


def open_report(page, path: Path) -> dict:
    """Load ``path``; what a person would see go wrong: console errors, page errors, requests."""
    seen = {"errors": [], "requests": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: seen["requests"].append(r.url))
    url = path.resolve().as_uri()
    page.goto(url, wait_until="load")
    seen["load_ms"] = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    seen["charts"] = page.evaluate("[...document.querySelectorAll('svg.chart')].map(s => "
                                   "[s.dataset.chart, s.querySelectorAll('.mark').length])")
    assert seen["requests"] == [url], seen["requests"]
    assert seen["errors"] == []
    assert seen["charts"] and all(n >= 1 for _, n in seen["charts"]), seen["charts"]
    return seen


@browser
def test_reports_in_headless_chromium(outputs):
    with chromium() as b:
        page = b.new_page(viewport={"width": 1280, "height": 900})
        seen = open_report(page, outputs["quickstart"] / "report.html")
        charts = dict(seen["charts"])
        assert "funnel" in charts and charts["funnel"] >= 5
        funnel = page.locator('svg[data-chart="funnel"]').text_content()
        for key in ("read", "unicode_normalize", "whitespace_normalize", "text_length_filter", "exact_dedup"):
            assert key in funnel
        assert page.locator('svg[data-chart="stat:text_length_filter:num_words"] line.threshold').count() >= 1
        assert any(c.startswith("dist:exact_dedup") for c in charts)  # duplicate-cluster sizes
        assert any(c.startswith("corpus:") for c in charts)
        samples = page.locator("#samples")
        assert samples.locator(".row").count() >= 2 and "too_few_words" in samples.inner_text()

        page = b.new_page()
        open_report(page, outputs["web"] / "report.html")
        assert page.evaluate("window.__pwned") is None
        assert XSS in page.locator("#samples").inner_text()  # shown, as text

        page = b.new_page()
        open_report(page, outputs["chat"] / "report.html")
        assert page.evaluate("window.__pwned") is None
        samples = page.locator("#samples")
        roles = samples.locator(".role").all_inner_texts()
        assert {"USER", "ASSISTANT"} <= {r.upper() for r in roles}
        assert "As an AI language model" in samples.inner_text()


def synthetic_output(out: Path, n: int = 1_000_000) -> Path:
    """A 1M-row run as the engine writes it: ledger, a profile built from 1M values per stat,
    a trace — and no rows (the report never reads them)."""
    from thresher.pipeline.ops import Bound

    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    prof = Profile()
    words = np.maximum(1, rng.lognormal(5, 1.1, n)).astype(np.int64)
    chars = (words * rng.normal(5.5, 0.6, n)).astype(np.int64)
    lines = np.maximum(1, words // rng.integers(10, 60, n))
    bounds = {"num_words": Bound(50, 100_000, "min_words", "max_words"), "num_chars": Bound(None, 200_000, None, "max_chars")}
    prof.add_stats("text_length_filter", {"num_words": words, "num_chars": chars}, bounds)
    gopher = {"mean_word_length": rng.normal(4.8, 0.7, n), "symbol_word_ratio": rng.beta(1, 40, n),
              "alpha_ratio": rng.beta(30, 2, n), "stop_words": rng.poisson(12, n)}
    gb = {"mean_word_length": Bound(3, 10, "min_avg_word_length", "max_avg_word_length"),
          "symbol_word_ratio": Bound(None, 0.1, None, "max_symbol_word_ratio"),
          "alpha_ratio": Bound(0.8, None, "min_alpha_word_ratio", None), "stop_words": Bound(2, None, "min_stop_words", None)}
    prof.add_stats("gopher_quality", gopher, gb)
    import pyarrow as pa

    langs = rng.choice(["en", "de", "fr", "es", "it", "nl", "pt", "pl", "sv", "ja", "zh", "ru"], n,
                       p=[.6, .08, .07, .06, .04, .03, .03, .02, .02, .02, .02, .01])
    prof.add_stats("language_id", {"lang": pa.array(langs), "lang_score": rng.beta(20, 2, n)},
                   {"lang_score": Bound(0.65, None, "min_score", None)})
    sizes = np.minimum(rng.zipf(2.2, 40_000) + 1, 5000)
    u, c = np.unique(sizes, return_counts=True)
    prof.add_distribution("minhash_dedup", "cluster_size", dict(zip(u.tolist(), c.tolist(), strict=True)))
    keep = rng.random(n) < 0.62
    for where, sel in (("input", slice(None)), ("output", keep)):
        part = prof.corpus.setdefault(where, {})
        for name, v in (("chars", chars), ("words", words), ("lines", lines)):
            part[name] = Sketch().add(v[sel])
        values, counts = np.unique(langs[sel], return_counts=True)
        part["lang"] = {str(k): int(v) for k, v in zip(values, counts, strict=True)}
    d = prof.to_dict()
    for key, bs in (("text_length_filter", bounds), ("gopher_quality", gb)):
        d["ops"][key]["thresholds"] = {s: {"lo": b.lo, "hi": b.hi, "lo_param": b.lo_param, "hi_param": b.hi_param}
                                       for s, b in bs.items()}
    (out / "profile.json").write_text(json.dumps(d))
    ops = {"read": {"op": "read", "index": -1, "rows_in": n + 120, "rows_out": n, "created": 0, "dropped": {},
                    "quarantined": {"malformed JSON": 120}, "counters": {}, "seconds": 41.0}}
    left = n
    for i, (key, drops, extra) in enumerate((
            ("text_length_filter", {"too_few_words": 180_000}, {}),
            ("gopher_quality", {"gopher_mean_word_length": 21_000, "gopher_stop_words": 60_000}, {}),
            ("language_id", {"low_lang_score": 40_000}, {}),
            ("minhash_dedup", {"near_duplicate": 70_000}, {"clusters": 40_000}),
            ("llm_quality", {"low_llm_score": 9_000}, {"llm_requests": 610_000, "llm_cached": 1_000, "llm_failed": 12,
                                                       "llm_prompt_tokens": 290_000_000, "llm_completion_tokens": 4_000_000,
                                                       "llm_cost_micro_usd": 52_300_000}))):
        lost = sum(drops.values())
        ops[key] = {"op": key, "index": i, "rows_in": left, "rows_out": left - lost, "created": 0, "dropped": drops,
                    "quarantined": {}, "counters": extra, "seconds": 10.0 + 3 * i}
        left -= lost
    led = {"ops": ops, "totals": {"input": n + 120, "created": 0, "dropped": n - left, "quarantined": 120, "output": left},
           "status": "succeeded", "balanced": True,
           "run": {"recipe": "synthetic-1m", "source": "synthetic.yaml", "fingerprint": "0", "run_id": "synthetic",
                   "executor": "ray", "shards": 64, "files": [],
                   "timings": {"executor": "ray", "start_seconds": 3.2, "seconds": 96.0,
                               "passes": [{"pass": 0, "shards": 64, "seconds": 70.0, "resolve": "minhash_dedup",
                                           "resolve_seconds": 9.0}, {"pass": 1, "shards": 64, "seconds": 14.0}]}}}
    (out / "ledger.json").write_text(json.dumps(led))
    trace = out / "trace"
    trace.mkdir(exist_ok=True)
    (trace / "00-text_length_filter.jsonl").write_text("".join(
        json.dumps({"id": f"r{i}", "reason": "too_few_words", "text": "word " * (3000 if i == 0 else 5),
                    "stats": {"num_words": 5, "num_chars": 25}}) + "\n" for i in range(20)))
    return out


def test_a_1m_row_report_stays_small(tmp_path):
    out = synthetic_output(tmp_path / "big")
    path = write_report(out)  # its speed is bench/'s business, not a unit test's
    size = path.stat().st_size
    assert size < 300_000, size
    page = path.read_text()
    assert page.count("…") >= 1 and "word " * 200 not in page  # long texts cut
    assert "$52.3000" in page and "610,000" in page  # LLM totals


@browser
def test_a_1m_row_report_loads_in_under_a_second(tmp_path):
    path = write_report(synthetic_output(tmp_path / "big"))
    with chromium_page() as page:
        seen = open_report(page, path)
        assert seen["load_ms"] < 1000, seen["load_ms"]
        assert len(seen["charts"]) >= 12
        assert page.locator("line.threshold").count() >= 5
        (tmp_path / "load_ms.txt").write_text(f"{seen['load_ms']:.0f} ms, {path.stat().st_size} bytes\n")
        print(f"1M-row report: {path.stat().st_size:,} bytes, load event at {seen['load_ms']:.0f} ms")


@browser
@pytest.mark.skipif(os.environ.get("THRESHER_DOCS_SCREENSHOT") != "1", reason="set THRESHER_DOCS_SCREENSHOT=1 "
                    "(and THRESHER_DOCS_REPORT=OUT for a real run's output) to write docs/report.png")
def test_docs_screenshot(outputs):
    """docs/report.png: the report of THRESHER_DOCS_REPORT (an output directory; default the
    quickstart's), the first 3000 px at 1280 wide."""
    out = Path(os.environ.get("THRESHER_DOCS_REPORT") or outputs["quickstart"])
    path = write_report(out)
    with chromium_page(1280, 900) as page:
        open_report(page, path)
        full = page.evaluate("document.documentElement.scrollHeight")
        page.screenshot(path=str(DOCS_PNG), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": min(full, 3000)})
    assert DOCS_PNG.stat().st_size < 600_000
