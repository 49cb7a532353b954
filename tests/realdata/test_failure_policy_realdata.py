"""Issue 12 on real data: runs that cannot produce what the recipe promises fail with one clear
reason (no false success, no traceback), and HTML-only pages are valid input for `fineweb`."""

from __future__ import annotations

import json

import pytest

from thresher.pipeline.errors import RunFailed
from thresher.pipeline.recipe import load_recipe
from thresher.pipeline.run import run


def test_sft_clean_on_an_unknown_format_fails_with_its_reason(shared_data, tmp_path):
    """`sft-clean` on the self-instruct seed tasks ({instruction, instances}) crashed in a global op;
    now every row is quarantined as an unknown shape and the run fails saying so."""
    out = tmp_path / "out"
    recipe = load_recipe("sft-clean", inputs=[str(shared_data / "self_instruct_human_written")], output=str(out))
    with pytest.raises(RunFailed, match=r"427 of 427 rows \(100.0%\) went to quarantine.*chat_format"):
        run(recipe)
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["status"] == "failed" and not (out / "_SUCCESS").exists()


@pytest.mark.network  # fineweb runs language_id (lid.176)
def test_fineweb_reads_pages_that_have_only_html(shared_data, tmp_path):
    import gzip

    files = sorted((shared_data / "trafilatura_eval_web_pages" / "html" / "eval").glob("*.html.gz"))[:60]
    rows = [{"id": f.name, "html": gzip.decompress(f.read_bytes()).decode("utf-8", "replace")} for f in files]
    src = tmp_path / "pages.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    result = run(load_recipe("fineweb", inputs=[str(src)], output=str(out)))
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["ops"]["read"]["quarantined"] == {} and ledger["ops"]["read"]["rows_out"] == len(rows) >= 50
    assert ledger["ops"]["html_extract"]["counters"]["html_bytes"] > 0 and result.output_rows > 0
