"""``gs://`` and ``az://`` / ``abfs://`` inputs and outputs against real servers on 127.0.0.1: the
GCS JSON API emulator (gcp-storage-emulator) and Microsoft's Azure Blob emulator (Azurite), both
started by ``tests/stores.py``. As for S3 (``test_object_store.py``, whose helpers these tests use):
a recipe that reads JSONL or Parquet from a bucket/container and writes to one gives the output of
the same recipe on local disk; globs and directories read as locally; a missing bucket/container and
refused credentials are one-line errors that show no secret; a run killed while publishing is
finished by ``--resume``. thresher finds each store the way Google's and Azure's SDKs do:
``STORAGE_EMULATOR_HOST``, ``AZURE_STORAGE_CONNECTION_STRING``. Local mode only: the Ray paths are
the same code for every store and are covered against S3."""

from __future__ import annotations

import base64
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import run_recipe, sample_docs, write_jsonl
from tests.pipeline.test_object_store import (
    PROCESS,
    _check_same,
    _cli,
    _inputs,
    _one_line_error,
    _write_recipe,
)
from tests.stores import azure_connection_string, azure_server, gcs_server

BUCKET = "corpus"
# every variable the two stores' libraries read: cleared so the machine's own settings cannot leak in
_STORE_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT",
              "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
              "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET",
              "AZURE_STORAGE_TENANT_ID")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with gcs_server(BUCKET, tmp_path_factory.mktemp("gcs")) as server:
        yield server


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    with azure_server(BUCKET, tmp_path_factory.mktemp("azurite")) as server:
        yield server


def _use(request, monkeypatch, tmp_path, kind: str):
    """The environment a user would set for the store ``kind``, a staging directory of this test's
    own, and a prefix of the bucket for this test."""
    for k in _STORE_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("THRESHER_STAGING", str(tmp_path / "staging"))
    if kind == "gs":
        server = request.getfixturevalue("gcs")
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.host)
    else:
        server = request.getfixturevalue("azurite")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", server.connection_string)
    server.scheme, server.prefix = kind, tmp_path.name
    server.root = f"{kind}://{BUCKET}/{tmp_path.name}"
    return server


@pytest.fixture(params=["gs", "az"])
def store(request, monkeypatch, tmp_path):
    return _use(request, monkeypatch, tmp_path, request.param)


def test_bucket_in_and_out_equals_local_disk(tmp_path, store):
    """JSONL split into byte ranges (small shards), read by a glob, then by a directory (``abfs://``
    for Azure: the same container under its other scheme); Parquet output."""
    paths = _inputs(tmp_path, store)
    sets = ["input.shard_size_mb=0.01"]
    run_recipe(paths, tmp_path / "local", PROCESS, fmt="parquet", sets=sets)
    out = f"{store.root}/out"
    result = run_recipe([f"{store.root}/in/*.jsonl"], out, PROCESS, fmt="parquet", sets=sets)
    assert result.url == out
    _check_same(store, f"{store.prefix}/out", tmp_path / "local")
    assert not any((tmp_path / "staging").iterdir())  # the staging copy is gone once published
    directory = f"{'abfs' if store.scheme == 'az' else 'gs'}://{BUCKET}/{store.prefix}/in"
    run_recipe([directory], out, PROCESS, fmt="parquet", sets=sets)  # replaces our own finished output
    _check_same(store, f"{store.prefix}/out", tmp_path / "local")


def test_parquet_input_equals_local_disk(tmp_path, store):
    """Parquet objects read by range (footer, then row groups: small groups, so several shards)."""
    docs = sample_docs(300, seed=3)
    docs += [dict(d, id=f"copy-{d['id']}") for d in docs[:30]]
    paths = []
    for i in range(3):
        p = tmp_path / "in" / f"p{i}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(docs[i::3]), p, row_group_size=20)
        store.put(f"{store.prefix}/in/{p.name}", p.read_bytes())
        paths.append(p)
    sets = ["input.shard_size_mb=0.001"]
    run_recipe(paths, tmp_path / "local", PROCESS, sets=sets)
    run_recipe([f"{store.root}/in/*.parquet"], f"{store.root}/out", PROCESS, sets=sets)
    _check_same(store, f"{store.prefix}/out", tmp_path / "local")
    ledger = json.loads(store.get(f"{store.prefix}/out/ledger.json"))
    assert ledger["run"]["shards"] > 3  # the objects were split by row groups


def test_gcs_endpoint_from_the_recipe(tmp_path, request, monkeypatch):
    """No STORAGE_EMULATOR_HOST: the recipe says where the store is (``storage_options.endpoint_url``)."""
    gs = _use(request, monkeypatch, tmp_path, "gs")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    paths = _inputs(tmp_path, gs, n=60, files=2)
    run_recipe(paths, tmp_path / "local", PROCESS)
    opts = {"storage_options": {"endpoint_url": gs.url}}
    run_recipe([f"{gs.root}/in/"], f"{gs.root}/out", PROCESS, input=opts, output=opts)
    _check_same(gs, f"{gs.prefix}/out", tmp_path / "local")


def test_missing_bucket_is_one_line(tmp_path, store):
    msg = _one_line_error(tmp_path, [f"{store.scheme}://no-such-bucket/in/*.jsonl"], tmp_path / "o")
    assert f"{store.scheme}://no-such-bucket" in msg and ("does not exist" in msg or "matches no files" in msg)
    msg = _one_line_error(tmp_path, [write_jsonl(tmp_path / "x.jsonl", sample_docs(5))],
                          f"{store.scheme}://no-such-bucket/out")
    assert msg.startswith(f"output '{store.scheme}://no-such-bucket/out': the ") and msg.endswith("does not exist")


def test_azure_wrong_key_is_one_line(tmp_path, request, monkeypatch):
    """Azurite checks the Shared Key signature: a connection string with another key is refused
    (403), for inputs, outputs and on the command line, and the key is never shown."""
    az = _use(request, monkeypatch, tmp_path, "az")
    _inputs(tmp_path, az, n=20, files=1)
    wrong = base64.b64encode(b"not the account key, but 64 bytes long to look like one......").decode()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azure_connection_string(az.port, wrong))
    msg = _one_line_error(tmp_path, [f"{az.root}/in/*.jsonl"], tmp_path / "o", wrong)
    assert "credentials were refused" in msg and f"{az.root}/in" in msg and "AZURE_STORAGE" in msg
    msg = _one_line_error(tmp_path, [write_jsonl(tmp_path / "x.jsonl", sample_docs(5))], f"{az.root}/o", wrong)
    assert "credentials were refused" in msg
    res = _cli("run", "quickstart", "--output", f"{az.root}/o", "-q")
    assert res.returncode == 2 and "Traceback" not in res.stderr and wrong not in res.stderr + res.stdout
    assert "credentials were refused" in res.stderr and len(res.stderr.strip().splitlines()) <= 3


def test_gcs_unusable_key_file_is_one_line(tmp_path, request, monkeypatch):
    """The GCS emulator checks no credentials (as Google's own emulators): what is checked here is
    that a key file named by GOOGLE_APPLICATION_CREDENTIALS that cannot be used is an error, not a
    silent fall back to anonymous access, and that the key is not shown."""
    gs = _use(request, monkeypatch, tmp_path, "gs")
    _inputs(tmp_path, gs, n=20, files=1)
    secret = "-----BEGIN PRIVATE KEY-----MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKc"
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "private_key": secret, "client_email": "x@y.z"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    msg = _one_line_error(tmp_path, [f"{gs.root}/in/*.jsonl"], tmp_path / "o", secret)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in msg and f"{gs.root}/in" in msg
    msg = _one_line_error(tmp_path, [write_jsonl(tmp_path / "x.jsonl", sample_docs(5))], f"{gs.root}/o", secret)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in msg and msg.startswith(f"output '{gs.root}/o'")


def test_workers_use_the_drivers_store_settings(tmp_path, store, monkeypatch):
    """A worker whose environment lacks the variables (a Ray started before they were set) reaches
    the store with the ones the driver's recipe carries (``fs.Storage``)."""
    from thresher.pipeline import fs

    store.put(f"{store.prefix}/in/a.jsonl", b'{"text": "x"}\n')
    storage = fs.Storage(env={k: v for k, v in os.environ.items() if k in fs.FORWARDED_ENV})
    assert storage.env and "connection" not in repr(storage).lower()
    for k in _STORE_ENV:
        monkeypatch.delenv(k, raising=False)
    saved = fs._current
    try:
        fs.configure(storage)
        assert [n for _, n in fs.expand(f"{store.root}/in", is_glob=False)] == ["a.jsonl"]
        with fs.open_input(f"{store.root}/in/a.jsonl") as f:
            assert f.read() == b'{"text": "x"}\n'
    finally:
        fs._current = saved


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@given(key=st.text(_B64, min_size=12, max_size=88), sas=st.text(_B64 + "%&-", min_size=12, max_size=60))
def test_connection_strings_are_blanked_in_messages(key, sas):
    """An Azure connection string in an error (a library that echoes its configuration) keeps its
    endpoint and loses its secrets: ``AccountKey=`` and ``SharedAccessSignature=``."""
    from thresher.pipeline import fs

    cs = azure_connection_string(10000, key)
    shown = fs.redact(f"ValueError: cannot use {cs!r}; also SharedAccessSignature={sas};BlobEndpoint=x")
    assert shown == (f"ValueError: cannot use {azure_connection_string(10000, '***')!r}; "
                     "also SharedAccessSignature=***;BlobEndpoint=x")


@pytest.mark.slow
def test_killed_while_publishing_then_resume(tmp_path, store):
    """Killed (as by SIGKILL) after some parts were uploaded: no ``_SUCCESS``, a plain rerun refuses
    the prefix, and ``--resume`` finishes it with the output of an uninterrupted run."""
    paths = _inputs(tmp_path, store)
    run_recipe(paths, tmp_path / "local", PROCESS, sets=["input.shard_size_mb=0.01"])
    recipe = _write_recipe(tmp_path, store)
    body = recipe.read_text().replace(f"s3://{BUCKET}/", f"{store.scheme}://{BUCKET}/")
    recipe.write_text(body)
    killed = _cli("run", str(recipe), "-q", env={"THRESHER_CRASH_AT": "publishing"})
    assert killed.returncode == 137, killed.stderr
    present = store.keys(f"{store.prefix}/killed")
    assert present and "_SUCCESS" not in present
    again = _cli("run", str(recipe), "-q")
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = _cli("run", str(recipe), "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _check_same(store, f"{store.prefix}/killed", tmp_path / "local")


@pytest.fixture
def refusing_token_endpoint():
    """An OAuth token endpoint on 127.0.0.1 that refuses every grant as Google's does a deleted or
    revoked service-account key (HTTP 400 ``invalid_grant``, RFC 6749 section 5.2)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_gcs_refused_key_is_one_line(tmp_path, request, monkeypatch, refusing_token_endpoint):
    """A well-formed service-account key that Google's token endpoint refuses (gcsfs retries a
    refused token six times, ~30 s, before giving up): one line, from the command line too, with
    neither the key nor a traceback."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    gs = _use(request, monkeypatch, tmp_path, "gs")
    _inputs(tmp_path, gs, n=20, files=1)
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "service_account", "project_id": "p", "private_key_id": "k1",
                               "private_key": pem, "client_email": "etl@p.iam.gserviceaccount.com",
                               "client_id": "1", "token_uri": refusing_token_endpoint}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    secret = pem.splitlines()[1]
    res = _cli("run", "quickstart", "--input", f"{gs.root}/in/*.jsonl", "--output", str(tmp_path / "o"), "-q")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert secret not in res.stderr + res.stdout
    assert "credentials were refused" in res.stderr and "GOOGLE_APPLICATION_CREDENTIALS" in res.stderr
