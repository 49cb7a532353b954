"""executor: ray runs the same passes as Ray tasks on a real local Ray (2 CPUs) and gives the same
output and ledger as the local executor."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_recipe, sample_docs, write_jsonl

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_ray_matches_local(tmp_path, local_ray):
    docs = sample_docs(600, seed=4)
    docs += [dict(d, id=f"copy-{d['id']}") for d in docs[:60]]
    paths = [write_jsonl(tmp_path / "in" / f"p{i}.jsonl", docs[i::3]) for i in range(3)]
    process = [{"whitespace_normalize": {}}, {"text_length_filter": {"min_words": 4}}, {"exact_dedup": {}},
               {"minhash_dedup": {"threshold": 0.8}}]
    run_recipe(paths, tmp_path / "local", process, workers=2)
    run_recipe(paths, tmp_path / "ray", process, executor={"type": "ray", "workers": 2})
    local = {f.name: f.read_bytes() for f in sorted((tmp_path / "local" / "data").iterdir())}
    on_ray = {f.name: f.read_bytes() for f in sorted((tmp_path / "ray" / "data").iterdir())}
    assert local == on_ray and local

    def counts(out):
        led = json.loads((out / "ledger.json").read_text())
        return {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in led["ops"].items()}

    assert counts(tmp_path / "local") == counts(tmp_path / "ray")
