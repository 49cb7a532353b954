"""Inputs and outputs on an S3-compatible object store, against a real S3 server on 127.0.0.1
(moto's standalone server, with authentication on: only the access key created in its IAM is let
in). A run that reads from and writes to a bucket gives the same output as one on local disk, in
local mode and on Ray; a run killed midway (or while publishing) and ``--resume``'d gives the same
output again; wrong credentials and a missing bucket are one-line errors that show no secret."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_recipe, sample_docs, write_jsonl
from thresher.pipeline.errors import ThresherError

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "corpus"
PROCESS = [{"whitespace_normalize": {}}, {"text_length_filter": {"min_words": 4}}, {"exact_dedup": {}}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3:
    def __init__(self, url: str, key: str, secret: str):
        self.url, self.key, self.secret = url, key, secret
        self.client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                                   aws_access_key_id=key, aws_secret_access_key=secret)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=BUCKET, Key=key, Body=data)

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
        return sorted(o["Key"][len(prefix) + 1:] for p in pages for o in p.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def _auth(count: float) -> None:
    """moto's switch (the server runs in this process): after ``count`` more requests, every
    request must be signed by a key its IAM knows, with a policy that allows it."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    settings.INITIAL_NO_AUTH_ACTION_COUNT = count
    ActionAuthenticatorMixin.request_count = 0


@pytest.fixture(scope="module")
def s3_server():
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    # moto's state is one per process: start from none, whichever module started a server before
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).close()
    try:
        boot = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "boot",
                "aws_secret_access_key": "boot"}
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="thresher")
        iam.put_user_policy(UserName="thresher", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="thresher")["AccessKey"]
        boto3.client("s3", **boot).create_bucket(Bucket=BUCKET)
        _auth(0)
        yield S3(url, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        _auth(float("inf"))
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """The environment a user would set (credentials, endpoint as the AWS SDKs read it), a staging
    directory of this test's own, and a prefix of the bucket for this test."""
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("THRESHER_STAGING", str(tmp_path / "staging"))
    s3_server.prefix = tmp_path.name
    return s3_server


def _inputs(tmp_path: Path, s3: S3, n: int = 400, files: int = 4) -> list[Path]:
    docs = sample_docs(n, seed=7)
    docs += [dict(d, id=f"copy-{d['id']}") for d in docs[:40]]
    paths = [write_jsonl(tmp_path / "in" / f"p{i}.jsonl", docs[i::files]) for i in range(files)]
    for p in paths:
        s3.put(f"{s3.prefix}/in/{p.name}", p.read_bytes())
    return paths


def _local_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.parts[len(out.parts)] in ("data", "quarantine")}


def _remote_files(s3: S3, prefix: str) -> dict[str, bytes]:
    return {k: s3.get(f"{prefix}/{k}") for k in s3.keys(prefix) if k.startswith(("data/", "quarantine/"))}


def _counts(ledger: dict) -> dict:
    return {k: {kk: vv for kk, vv in v.items() if kk != "seconds"} for k, v in ledger["ops"].items()}


def _check_same(s3: S3, prefix: str, local_out: Path) -> None:
    keys = s3.keys(prefix)
    assert "_SUCCESS" in keys and "ledger.json" in keys and "_thresher.json" in keys
    assert not [k for k in keys if k.startswith("_work") or k.endswith(".tmp")]
    remote, local = _remote_files(s3, prefix), _local_files(local_out)
    assert remote == local and any(k.startswith("data/") for k in local)
    remote_ledger = json.loads(s3.get(f"{prefix}/ledger.json"))
    assert _counts(remote_ledger) == _counts(json.loads((local_out / "ledger.json").read_text()))
    assert remote_ledger["status"] == "succeeded"


def test_bucket_in_and_out_equals_local_disk(tmp_path, s3):
    paths = _inputs(tmp_path, s3)
    run_recipe(paths, tmp_path / "local", PROCESS, fmt="parquet", workers=1)
    url = f"s3://{BUCKET}/{s3.prefix}/out"
    result = run_recipe([f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], url, PROCESS, fmt="parquet", workers=1)
    assert result.url == url
    _check_same(s3, f"{s3.prefix}/out", tmp_path / "local")
    assert not any((tmp_path / "staging").iterdir())  # the staging copy is gone once published
    # a directory of the bucket reads as a local directory does; a second run replaces our own output
    run_recipe([f"s3://{BUCKET}/{s3.prefix}/in"], url, PROCESS, fmt="parquet", workers=1)
    _check_same(s3, f"{s3.prefix}/out", tmp_path / "local")


def test_blocks_smaller_than_a_bucket_shard(tmp_path, s3):
    """A shard read from the bucket in several blocks: each block is finished to the end of its line
    through the fsspec file (whose ``readline`` takes no size), as from a local file."""
    paths = _inputs(tmp_path, s3, n=1200, files=2)
    sets = ["input.shard_size_mb=0.05", "executor.batch_size_mb=0.003"]
    run_recipe(paths, tmp_path / "local", PROCESS, fmt="parquet", workers=1, sets=sets)
    run_recipe([f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], f"s3://{BUCKET}/{s3.prefix}/out", PROCESS, fmt="parquet",
               workers=1, sets=sets)
    _check_same(s3, f"{s3.prefix}/out", tmp_path / "local")


def test_endpoint_from_the_recipe(tmp_path, s3, monkeypatch):
    paths = _inputs(tmp_path, s3, n=60, files=2)
    run_recipe(paths, tmp_path / "local", PROCESS)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    opts = {"storage_options": {"endpoint_url": s3.url}}
    run_recipe([f"s3://{BUCKET}/{s3.prefix}/in/"], f"s3://{BUCKET}/{s3.prefix}/out", PROCESS,
               input=opts, output=opts)
    _check_same(s3, f"{s3.prefix}/out", tmp_path / "local")


@pytest.mark.slow
def test_bucket_on_ray_equals_local_disk(tmp_path, s3, local_ray):
    """The Ray session started before these variables were set: the tasks get the endpoint and
    credentials with the recipe, not from their own environment."""
    paths = _inputs(tmp_path, s3)
    run_recipe(paths, tmp_path / "local", PROCESS, fmt="parquet")
    run_recipe(paths, tmp_path / "ray-local", PROCESS, fmt="parquet", executor={"type": "ray", "workers": 2})
    run_recipe([f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], f"s3://{BUCKET}/{s3.prefix}/out", PROCESS,
               fmt="parquet", executor={"type": "ray", "workers": 2})
    _check_same(s3, f"{s3.prefix}/out", tmp_path / "ray-local")
    remote_rows = sorted(json.loads(s3.get(f"{s3.prefix}/out/ledger.json"))["totals"].items())
    assert remote_rows == sorted(json.loads((tmp_path / "local" / "ledger.json").read_text())["totals"].items())


def _write_recipe(tmp_path: Path, s3: S3, fmt: str = "jsonl") -> Path:
    body = {"input": {"paths": [f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], "shard_size_mb": 0.01},
            "output": {"path": f"s3://{BUCKET}/{s3.prefix}/killed", "format": fmt},
            "executor": {"type": "local", "workers": 1}, "seed": 1, "process": PROCESS}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thresher", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["after-ledger", "publishing", "before-remote-success"])
def test_killed_then_resume_on_the_bucket(tmp_path, s3, crash_at):
    """Killed (as by SIGKILL) after the rows were written but before publishing, in the middle of
    publishing, and just before ``_SUCCESS``: the bucket is visibly incomplete, a plain rerun refuses
    it, and ``--resume`` finishes it with the same output as an uninterrupted run."""
    paths = _inputs(tmp_path, s3)
    run_recipe(paths, tmp_path / "local", PROCESS, sets=["input.shard_size_mb=0.01"])
    recipe = _write_recipe(tmp_path, s3)
    killed = _cli("run", str(recipe), "-q", env={"THRESHER_CRASH_AT": crash_at})
    assert killed.returncode == 137, killed.stderr
    assert "_SUCCESS" not in s3.keys(f"{s3.prefix}/killed")
    if crash_at != "after-ledger":  # parts were published: the prefix holds an unfinished run
        again = _cli("run", str(recipe), "-q")
        assert again.returncode == 2 and "--resume" in again.stderr
    resumed = _cli("run", str(recipe), "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _check_same(s3, f"{s3.prefix}/killed", tmp_path / "local")


@pytest.mark.slow
def test_sigkill_mid_pass_then_resume(tmp_path, s3):
    """SIGKILLed in the middle of the pass (some shards done, not the others): nothing is published,
    and --resume redoes only what is missing, from the staging directory, then publishes."""
    from thresher.pipeline.fs import staging_dir

    paths = _inputs(tmp_path, s3, n=3000)
    run_recipe(paths, tmp_path / "local", PROCESS, sets=["input.shard_size_mb=0.01"])
    recipe = _write_recipe(tmp_path, s3)
    done = staging_dir(f"s3://{BUCKET}/{s3.prefix}/killed") / "_work" / "pass-0"
    proc = subprocess.Popen([sys.executable, "-m", "thresher", "run", str(recipe), "-q"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(done.glob("done-*.json"))) < 5:
        if proc.poll() is not None:
            pytest.fail("the run finished before it could be killed; make the input bigger")
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_done = len(list(done.glob("done-*.json")))
    assert s3.keys(f"{s3.prefix}/killed") == []  # nothing published yet
    resumed = _cli("run", str(recipe), "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _check_same(s3, f"{s3.prefix}/killed", tmp_path / "local")
    total = json.loads(s3.get(f"{s3.prefix}/killed/ledger.json"))["run"]["shards"]
    assert 5 <= n_done < total


def _one_line_error(tmp_path, inputs, out, secret=None) -> str:
    with pytest.raises(ThresherError) as e:
        run_recipe(inputs, out, PROCESS)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    if secret:
        assert secret not in msg
    return msg


def test_wrong_credentials_are_one_line(tmp_path, s3, monkeypatch):
    _inputs(tmp_path, s3, n=20, files=1)
    secret = "wJalrXUtnFEMI-not-the-right-one"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    msg = _one_line_error(tmp_path, [f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], tmp_path / "o", secret)
    assert "credentials were refused" in msg and f"s3://{BUCKET}/{s3.prefix}/in" in msg
    msg = _one_line_error(tmp_path, [write_jsonl(tmp_path / "x.jsonl", sample_docs(5))],
                          f"s3://{BUCKET}/{s3.prefix}/o", secret)
    assert "credentials were refused" in msg and "AKIAWRONG" not in msg
    # and from the command line: exit 2, one line, no traceback
    res = _cli("run", "quickstart", "--output", f"s3://{BUCKET}/{s3.prefix}/o", "-q")
    assert res.returncode == 2 and "Traceback" not in res.stderr and secret not in res.stderr + res.stdout
    assert "credentials were refused" in res.stderr


def test_missing_bucket_is_one_line(tmp_path, s3):
    msg = _one_line_error(tmp_path, ["s3://no-such-bucket/in/*.jsonl"], tmp_path / "o")
    assert "s3://no-such-bucket" in msg and ("does not exist" in msg or "matches no files" in msg)
    msg = _one_line_error(tmp_path, [write_jsonl(tmp_path / "x.jsonl", sample_docs(5))], "s3://no-such-bucket/out")
    assert msg == "output 's3://no-such-bucket/out': the bucket does not exist"


def test_foreign_objects_are_never_deleted(tmp_path, s3):
    s3.put(f"{s3.prefix}/out/notes.txt", b"someone else's")
    msg = _one_line_error(tmp_path, [write_jsonl(tmp_path / "x.jsonl", sample_docs(20))],
                          f"s3://{BUCKET}/{s3.prefix}/out")
    assert "did not write" in msg and "notes.txt" in msg
    assert s3.keys(f"{s3.prefix}/out") == ["notes.txt"]


def test_output_inside_an_input_is_refused(tmp_path, s3):
    _inputs(tmp_path, s3, n=20, files=1)
    msg = _one_line_error(tmp_path, [f"s3://{BUCKET}/{s3.prefix}/in/*.jsonl"], f"s3://{BUCKET}/{s3.prefix}/in/out")
    assert "overlaps the input" in msg


def test_a_run_resumes_with_the_executor_it_started_with(tmp_path, s3):
    """A Ray run's parts and state are in the bucket (``_work/``), a local run's in its staging
    directory: resuming one with the other executor is refused, naming the setting, and nothing is
    deleted. (A cluster without THRESHER_STAGING is no longer refused: test_object_store_direct.)"""
    s3.put(f"{s3.prefix}/out/_work/manifest.json", b"{}")
    s3.put(f"{s3.prefix}/out/data/part-00000-b00000-000.jsonl", b'{"text": "x"}\n')
    with pytest.raises(ThresherError, match=r"started with executor.type=ray \(--set executor.type=ray --resume\)"):
        run_recipe([write_jsonl(tmp_path / "x.jsonl", sample_docs(5))], f"s3://{BUCKET}/{s3.prefix}/out", PROCESS,
                   resume=True)
    assert s3.keys(f"{s3.prefix}/out") == ["_work/manifest.json", "data/part-00000-b00000-000.jsonl"]
