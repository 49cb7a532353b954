"""The driver reads each done marker once, as its shard finishes, and merges them in (pass, shard)
order whatever order the shards finish in (pipeline/summary.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import read_output, run_recipe, sample_docs, write_jsonl
from thresher.pipeline.faults import ENV as CRASH_ENV
from thresher.pipeline.faults import EXIT_CODE
from thresher.pipeline.layout import Layout
from thresher.pipeline.ledger import Ledger
from thresher.pipeline.profile import Profile
from thresher.pipeline.runner import keep_sample
from thresher.pipeline.summary import MarkerSummary


def _ops(layout: Layout) -> list[tuple[str, str, int]]:
    ops = layout.read_done(0, 0)["ledger"]
    return [(key, e["op"], e["index"]) for key, e in ops.items() if e["index"] >= 0]

PROCESS = [{"text_length_filter": {"min_words": 5, "max_words": 60}}, {"exact_dedup": {}},
           {"text_length_filter": {"min_words": 8}}]


def _inputs(tmp_path, files=6, n=400):
    docs = sample_docs(files * n, seed=5)
    docs += [dict(d, id=f"again{i}") for i, d in enumerate(docs[:300])]  # exact duplicates to drop
    return [write_jsonl(tmp_path / "in" / f"p{i}.jsonl", docs[i::files]) for i in range(files)]


def test_each_marker_is_read_once_by_the_driver(tmp_path, monkeypatch):
    reads: Counter = Counter()
    original = Layout.read_done

    def counting(self, k, shard):
        reads[(k, shard)] += 1
        return original(self, k, shard)

    monkeypatch.setattr(Layout, "read_done", counting)
    result = run_recipe(_inputs(tmp_path), tmp_path / "out", PROCESS, workers=2)
    ledger = json.loads((tmp_path / "out" / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["run"]["shards"] == 6
    assert sorted(reads) == [(k, s) for k in range(2) for s in range(6)]  # two passes (exact_dedup splits)
    assert set(reads.values()) == {1}, reads
    assert result.output_rows == len(read_output(tmp_path / "out")) > 0


def _reference(layout: Layout, n_passes: int, shards: list[int], trace_samples: int):
    """What the driver merged before: every marker, in (pass, shard) order, read from disk."""
    ledger, profile, trace, rows = Ledger(_ops(layout)), Profile(), {}, {}
    for k in range(n_passes):
        for s in shards:
            done = layout.read_done(k, s)
            ledger.merge(Ledger.from_dict({"ops": done["ledger"]}))
            profile.merge(done["profile"])
            for key, recs in done["trace"].items():
                trace[key] = keep_sample(trace.get(key, []) + recs, trace_samples)
            rows.setdefault(k, {})[s] = done["rows_out"]
    return ledger.to_dict(), profile.to_dict(), {k: v for k, v in trace.items() if v}, rows


def _kept_markers(tmp_path_factory):
    """A run stopped (os._exit, in its own process) just before its commit: every done marker is on disk."""
    base = tmp_path_factory.mktemp("markers")
    out = base / "out"
    body = {"input": {"paths": [str(p) for p in _inputs(base)]}, "output": {"path": str(out)},
            "executor": {"type": "local", "workers": 2}, "seed": 1, "process": PROCESS}
    (base / "r.yaml").write_text(yaml.safe_dump(body))
    proc = subprocess.run([sys.executable, "-m", "thresher", "run", str(base / "r.yaml"), "-q"],
                          env={**os.environ, CRASH_ENV: "before-commit"}, capture_output=True, text=True)
    assert proc.returncode == EXIT_CODE, proc.stderr
    return Layout(out)


_CACHE: dict = {}


@settings(max_examples=25, deadline=None)
@given(order=st.permutations([(k, s) for k in range(2) for s in range(6)]))
def test_arrival_order_does_not_change_the_summary(tmp_path_factory, order):
    if "layout" not in _CACHE:
        _CACHE["layout"] = _kept_markers(tmp_path_factory)
    full: Layout = _CACHE["layout"]
    assert all(full.done(k, s).exists() for k, s in order), "the crash point kept every marker"
    expected = _reference(full, 2, list(range(6)), 3)

    staged = Layout(tmp_path_factory.mktemp("arrive") / "out")
    summary = MarkerSummary(staged, _ops(full), range(6), trace_samples=3)
    # markers appear in a random order; pass 1's only after every pass-0 marker (passes are sequential)
    order = sorted(order, key=lambda ks: ks[0])
    for k, s in order:
        staged.pass_dir(k).mkdir(parents=True, exist_ok=True)
        shutil.copy(full.done(k, s), staged.done(k, s))
        summary.arrived(k)
    summary.complete(1)
    got = (summary.ledger.to_dict(), summary.profile.to_dict(), {k: v for k, v in summary.trace.items() if v},
           summary.rows_out)
    assert got == expected
    assert summary.reads == 12
