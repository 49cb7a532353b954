"""Real object-store servers on 127.0.0.1 for the ``gs://`` and ``az://`` tests, each at a free port:

- **Google Cloud Storage**: ``gcp-storage-emulator`` (PyPI), a pure-Python HTTP server speaking the
  GCS JSON API (``/storage/v1/b/...``, ``/upload/storage/v1/...``: the requests gcsfs sends), run
  as a subprocess with its objects in memory. Like the real service's emulator contract, it checks
  no credentials: clients find it through ``STORAGE_EMULATOR_HOST`` (as Google's client libraries
  and gcsfs read it: ``gcsfs.core._location``) and send anonymous requests.
- **Azure Blob Storage**: Microsoft's Azurite (npm package ``azurite``), the emulator the Azure SDK
  docs point to, started as ``azurite-blob``. It verifies Shared Key signatures against its
  well-known development account (``devstoreaccount1``, key published in the Azurite README), so a
  wrong key is refused as Azure refuses it (403 ``AuthenticationFailed``). ``azurite-blob`` is
  taken from ``PATH`` or installed once with npm into ``$THRESHER_CACHE/npm`` (else
  ``~/.cache/thresher/npm``); where node/npm are missing or the install fails, the tests that need
  it are skipped, saying why.

Each fixture gives a client that does not go through thresher's code (google-cloud-storage,
azure-storage-blob) to put inputs and read back outputs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

# Azurite's development account (https://github.com/Azure/Azurite#default-storage-account): public
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# read at import, before the tests' session cache replaces THRESHER_CACHE: the install is kept
# across test sessions
_NPM_DIR = Path(os.environ.get("THRESHER_CACHE") or Path.home() / ".cache" / "thresher") / "npm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@contextlib.contextmanager
def _serving(cmd: list[str], port: int, log_path: Path, what: str):
    """Run the server ``cmd`` (its output to ``log_path``) until the block ends; skip if it never listens."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            try:
                _wait_for_port(port, proc)
            except RuntimeError as e:
                pytest.skip(f"{what} did not start: {e} ({log_path.read_text(errors='replace')[-300:]!r})")
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- GCS
class Gcs:
    """A running GCS emulator: ``host`` (for ``STORAGE_EMULATOR_HOST``) and a google-cloud-storage
    client on it."""

    def __init__(self, host: str, bucket: str):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.host, self.url, self.bucket_name = host, f"http://{host}", bucket
        self.client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                     client_options={"api_endpoint": self.url})
        self.bucket = self.client.bucket(bucket)

    def put(self, key: str, data: bytes) -> None:
        self.bucket.blob(key).upload_from_string(data)

    def keys(self, prefix: str) -> list[str]:
        return sorted(b.name[len(prefix) + 1:] for b in self.client.list_blobs(self.bucket_name, prefix=prefix + "/"))

    def get(self, key: str) -> bytes:
        return self.bucket.blob(key).download_as_bytes()


@contextlib.contextmanager
def gcs_server(bucket: str, workdir: Path):
    pytest.importorskip("gcsfs")
    pytest.importorskip("google.cloud.storage")
    pytest.importorskip("gcp_storage_emulator")
    port = free_port()
    cmd = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
           "--in-memory", "--default-bucket", bucket, "--quiet"]
    with _serving(cmd, port, workdir / "gcs-emulator.log", "the GCS emulator"):
        yield Gcs(f"127.0.0.1:{port}", bucket)


# --------------------------------------------------------------------------- Azure
def azurite_blob() -> str:
    """The ``azurite-blob`` executable: on PATH, in the npm cache, or installed there now
    (``npm install --prefix DIR azurite@3``, once; a file lock keeps two test sessions from
    installing at once). Skips the calling test when it cannot be had."""
    found = shutil.which("azurite-blob")
    if found:
        return found
    exe = _NPM_DIR / "node_modules" / ".bin" / "azurite-blob"
    if exe.is_file():
        return str(exe)
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Azurite (the Azure Blob emulator) needs node and npm, which are not installed")
    import fcntl

    _NPM_DIR.mkdir(parents=True, exist_ok=True)
    with open(_NPM_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.is_file():
            try:
                res = subprocess.run(["npm", "install", "--prefix", str(_NPM_DIR), "--no-audit", "--no-fund",
                                      "--loglevel=error", "azurite@3"], capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired:
                pytest.skip("installing Azurite with npm took more than 15 minutes")
            if res.returncode != 0 or not exe.is_file():
                tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
                pytest.skip(f"could not install Azurite with npm into {_NPM_DIR}: {tail[0]}")
    return str(exe)


def azure_connection_string(port: int, key: str = AZURITE_KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")


class Azure:
    """A running Azurite: its connection string and an azure-storage-blob client on one container."""

    def __init__(self, port: int, container: str):
        from azure.storage.blob import BlobServiceClient

        self.port, self.container_name = port, container
        self.connection_string = azure_connection_string(port)
        self.service = BlobServiceClient.from_connection_string(self.connection_string)
        self.container = self.service.get_container_client(container)

    def put(self, key: str, data: bytes) -> None:
        self.container.upload_blob(key, data, overwrite=True)

    def keys(self, prefix: str) -> list[str]:
        return sorted(b.name[len(prefix) + 1:] for b in self.container.list_blobs(name_starts_with=prefix + "/"))

    def get(self, key: str) -> bytes:
        return self.container.download_blob(key).readall()


@contextlib.contextmanager
def azure_server(container: str, workdir: Path):
    pytest.importorskip("adlfs")
    pytest.importorskip("azure.storage.blob")
    exe = azurite_blob()
    port = free_port()
    (workdir / "azurite").mkdir(parents=True, exist_ok=True)
    cmd = [exe, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(workdir / "azurite"),
           "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
    with _serving(cmd, port, workdir / "azurite.log", "Azurite"):
        azure = Azure(port, container)
        azure.service.create_container(container)
        yield azure
