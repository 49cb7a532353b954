"""`thresher push-hf`: what is staged for the Hub (Parquet shards under the Hub's names, one schema
across them, the rows of the output in its order), the dataset card (front matter with
configs/data_files and a license placeholder, the ledger's funnel), and the upload calls.

Nothing here reaches the network. The Hub's upload protocol (preupload, LFS/Xet transfer, commit)
has no faithful local stand-in, so the calls are checked against a recording stand-in of HfApi;
the real command is in docs/cli.md."""

from __future__ import annotations

import os

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import read_output, run_recipe, write_jsonl
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.hub import dataset_card, push, shard_names, stage

TEXT = "the river runs past the old mill and the town library every single winter morning"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Two real runs over two inputs with differing fields (one has `lang`, one has a numeric
    `score`): JSONL parts (zstd) and Parquet parts, several per output."""
    root = tmp_path_factory.mktemp("hub")
    a = write_jsonl(root / "in" / "a.jsonl", [{"id": f"a{i}", "text": f"{TEXT} {i}", "lang": "en"} for i in range(30)])
    b = write_jsonl(root / "in" / "b.jsonl", [{"id": f"b{i}", "text": f"{TEXT} {i} b", "score": i / 3} for i in range(30)]
                    + [{"id": "short", "text": "too short"}, {"id": "b0", "text": f"{TEXT} 0"}])
    process = [{"text_length_filter": {"min_words": 5}}, {"exact_dedup": {}}]
    res = {}
    for fmt in ("jsonl.zst", "parquet"):
        out = root / fmt
        run_recipe([a, b], out, process, fmt=fmt, output={"rows_per_shard": 20})
        res[fmt] = out
    return res


@pytest.mark.parametrize("fmt", ["jsonl.zst", "parquet"])
def test_staged_shards_hold_the_output_rows_under_one_schema(outputs, tmp_path, fmt):
    out = outputs[fmt]
    staged = stage(out, "org/web-clean", tmp_path / "repo")
    parts = sorted(p.name for p in (out / "data").glob("part-*"))
    assert len(parts) >= 3  # several parts, from two inputs
    assert list(staged.files.values()) == [f"data/train-{i:05d}-of-{len(parts):05d}.parquet" for i in range(len(parts))]
    shards = sorted((tmp_path / "repo" / "data").glob("*.parquet"))
    assert [p.name for p in shards] == [v.split("/")[1] for v in staged.files.values()]
    schemas = {pq.read_schema(p).remove_metadata() for p in shards}
    assert len(schemas) == 1  # one table for load_dataset and the viewer
    assert {"lang", "score", "text", "id"} <= set(staged.schema.names)
    import polars as pl

    table = pl.read_parquet(tmp_path / "repo" / "data" / "*.parquet")  # refuses parts with differing schemas
    expected = read_output(out)
    assert table.height == staged.rows == len(expected)
    assert table["id"].to_list() == [r["id"] for r in expected]  # the output's order
    assert table.filter(pl.col("id") == "b3")["score"].to_list() == [1.0]
    assert table.filter(pl.col("id") == "a3")["lang"].to_list() == ["en"]
    assert sorted(os.listdir(tmp_path / "repo")) == ["README.md", "data"]


def test_parquet_parts_are_not_modified(outputs, tmp_path):
    out = outputs["parquet"]
    before = {p: p.read_bytes() for p in (out / "data").glob("part-*")}
    stage(out, "org/x", tmp_path / "repo")
    assert {p: p.read_bytes() for p in (out / "data").glob("part-*")} == before


def test_shard_names_follow_the_output_order():
    files = ["data/part-00000-000.jsonl", "data/part-00000-001.jsonl", "data/part-00001-000.jsonl"]
    assert shard_names(files) == {"data/part-00000-000.jsonl": "data/train-00000-of-00003.parquet",
                                  "data/part-00000-001.jsonl": "data/train-00001-of-00003.parquet",
                                  "data/part-00001-000.jsonl": "data/train-00002-of-00003.parquet"}


def test_dataset_card_front_matter_and_funnel(outputs, tmp_path):
    import json

    out = outputs["jsonl.zst"]
    staged = stage(out, "org/web-clean", tmp_path / "repo")
    card = (tmp_path / "repo" / "README.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "other" and "placeholder" in card
    assert front["configs"] == [{"config_name": "default",
                                 "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    assert front["size_categories"] == ["n<1K"]
    ledger = json.loads((out / "ledger.json").read_text())
    for key, e in ledger["ops"].items():  # a funnel row per op with the ledger's numbers
        dropped = sum(e["dropped"].values())
        assert f"| {key} | {e['rows_in']:,} | {e['rows_out']:,} | {dropped:,} | {sum(e['quarantined'].values()):,} |" in card
    assert "| text_length_filter | dropped | too_few_words | 1 |" in card
    assert "| exact_dedup | dropped | exact_duplicate | 1 |" in card
    t = ledger["totals"]
    assert f"kept {t['output']:,} + dropped {t['dropped']:,} + quarantined {t['quarantined']:,}" in card
    assert str(tmp_path) not in card and str(out) not in card  # no local path goes up
    assert f"{staged.rows:,} rows" in card
    custom = dataset_card(ledger, "org/x", 5, staged.schema, license="cc-by-4.0")
    assert yaml.safe_load(custom.split("---\n")[1])["license"] == "cc-by-4.0" and "placeholder" not in custom


def test_refuses_what_is_not_a_finished_output(outputs, tmp_path):
    with pytest.raises(ThresherError, match="not a thresher output"):
        stage(tmp_path, "org/x", tmp_path / "repo")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(outputs["parquet"], copy)
    (copy / "_SUCCESS").unlink()
    with pytest.raises(ThresherError, match="unfinished run"):
        stage(copy, "org/x", tmp_path / "repo")


class RecordingHub:
    """Records HfApi calls; checks the staged folder while ``upload_folder`` runs."""

    def __init__(self, fail: int | None = None):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.uploaded: list[str] = []
        self.fail = fail

    def create_repo(self, *args, **kw):
        self.calls.append(("create_repo", args, kw))
        if self.fail:
            from huggingface_hub.errors import HfHubHTTPError

            url = "https://hub.invalid/api/repos/create"
            raise HfHubHTTPError(f"{self.fail} Client Error for url: {url}",
                                 response=httpx.Response(self.fail, request=httpx.Request("POST", url)))

    def create_branch(self, *args, **kw):
        self.calls.append(("create_branch", args, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", (), kw))
        folder = kw["folder_path"]
        self.uploaded = sorted(str(p.relative_to(folder)) for p in __import__("pathlib").Path(folder).rglob("*")
                               if p.is_file())
        return type("CommitInfo", (), {"commit_url": "https://hub.invalid/datasets/org/x/commit/abc"})()


def test_push_creates_the_repo_and_uploads_one_commit(outputs):
    hub = RecordingHub()
    staged, url = push(outputs["parquet"], "org/web-clean", private=True, revision="v1", api=hub)
    assert [c[0] for c in hub.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert hub.calls[0][1] == ("org/web-clean",)
    assert hub.calls[0][2] == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert hub.calls[1][2] == {"repo_type": "dataset", "branch": "v1", "exist_ok": True}
    up = hub.calls[2][2]
    assert up["repo_id"] == "org/web-clean" and up["repo_type"] == "dataset" and up["revision"] == "v1"
    assert up["delete_patterns"] == ["data/*"]  # older shards of the repo go in the same commit
    assert hub.uploaded == ["README.md", *sorted(staged.files.values())]
    assert url.endswith("/commit/abc") and not os.path.exists(up["folder_path"])  # the staging is removed


def test_push_errors_are_one_line(outputs, monkeypatch):
    with pytest.raises(ThresherError, match="not a Hub dataset name"):
        push(outputs["parquet"], "no-org-given", api=RecordingHub())
    with pytest.raises(ThresherError, match="not a Hub dataset name"):
        push(outputs["parquet"], "org/bad--name", api=RecordingHub())
    with pytest.raises(ThresherError, match="not logged in; set HF_TOKEN"):
        push(outputs["parquet"], "org/x", api=RecordingHub(fail=401))
    with pytest.raises(ThresherError, match="cannot write to 'org'"):
        push(outputs["parquet"], "org/x", api=RecordingHub(fail=403))


def test_cli_push_hf_refuses_a_bad_name_before_the_network(outputs, capsys):
    from thresher.pipeline.cli import main

    assert main(["push-hf", str(outputs["parquet"]), "not a repo"]) == 2
    assert "not a Hub dataset name" in capsys.readouterr().err


def test_unreachable_hub_is_one_line_without_the_token(outputs, tmp_path):
    """The real HfApi, pointed (HF_ENDPOINT) at a 127.0.0.1 port nothing listens on."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = "hf_thisIsNotARealTokenButMustNotLeak"
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": secret, "HF_HOME": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "thresher", "push-hf", str(outputs["parquet"]), "org/x"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "pushing org/x to the Hub failed" in res.stderr and secret not in res.stderr + res.stdout


def test_a_row_longer_than_the_json_block_converts(tmp_path):
    import json

    from thresher.pipeline.hub import _to_parquet

    src = tmp_path / "part-00000-000.jsonl"
    src.write_text(json.dumps({"id": "long", "text": "a" * (20 << 20)}) + "\n" + json.dumps({"id": "b", "text": "b"}) + "\n")
    _to_parquet(src, tmp_path / "x.parquet")
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.column("id").to_pylist() == ["long", "b"] and len(table.column("text")[0].as_py()) == 20 << 20
