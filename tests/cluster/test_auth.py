"""Token authentication: where the token is found (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, then
~/.ray/auth_token, Ray's order), what `thresher jobs` sends, and the one line that says what to set.

The Jobs API here is a stand-in: a real HTTP server on 127.0.0.1 that answers the two requests
`thresher jobs status` makes (GET /api/version, GET /api/jobs/ID) and checks the Authorization
header as Ray's dashboard middleware does (401 without one, 403 for a wrong token). The real Ray
head with token auth is in test_jobs.py (slow)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from thresher.cluster.auth import auth_headers, auth_message, connect_error, find_token, gcs_requires_token
from thresher.pipeline.errors import ThresherError

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "0123456789abcdef0123456789abcdef"
ADDRESS = "10.0.0.5:6379"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def write_home_token(home: Path, token: str = TOKEN) -> None:
    (home / ".ray").mkdir(exist_ok=True)
    (home / ".ray" / "auth_token").write_text(token + "\n")


def test_token_is_found_in_rays_order(clean_env, monkeypatch):
    assert find_token() == (None, "") and auth_headers() == {}
    write_home_token(clean_env, "from-home")
    assert find_token() == ("from-home", "~/.ray/auth_token")
    assert auth_headers() == {"Authorization": "Bearer from-home"}
    path = clean_env / "tok"
    path.write_text("from-path\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert find_token() == ("from-path", str(path))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token() == ("from-env", "RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(clean_env / "missing"))
    with pytest.raises(ThresherError, match="RAY_AUTH_TOKEN_PATH .*cannot be read"):
        find_token()


def test_the_message_says_exactly_what_is_missing(clean_env, monkeypatch):
    msg = auth_message(ADDRESS)
    assert "requires token authentication" in msg and "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN" in msg
    write_home_token(clean_env)  # a token, but the mode is not set: Ray would not send it
    msg = auth_message(ADDRESS)
    assert "set RAY_AUTH_MODE=token (" in msg and "cluster's token" not in msg
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert "set RAY_AUTH_MODE=token (it is 'disabled')" in auth_message(ADDRESS)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # mode and token: the token is the wrong one
    msg = auth_message(ADDRESS)
    assert "rejected the token from ~/.ray/auth_token" in msg and TOKEN not in msg  # never the token itself


def test_connect_error_recognises_rays_authentication_error(clean_env):
    from ray.exceptions import AuthenticationError

    msg = connect_error(ADDRESS, AuthenticationError("Token authentication is enabled but no token was found"))
    assert "RAY_AUTH_MODE=token" in msg and "RAY_AUTH_TOKEN" in msg


def test_an_unreachable_address_is_not_called_an_auth_problem(clean_env):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert gcs_requires_token(f"127.0.0.1:{port}", timeout=5) is False
    msg = connect_error(f"127.0.0.1:{port}", ConnectionError("Failed to connect to Ray cluster"))
    assert msg.startswith(f"cannot connect to the Ray cluster at 127.0.0.1:{port}") and "RAY_AUTH_MODE" not in msg
    assert gcs_requires_token("ray://head:10001") is False  # a client address is not probed


class JobsApiStandIn(BaseHTTPRequestHandler):
    """GET /api/version and /api/jobs/ID behind Ray's dashboard token check."""

    token = TOKEN
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        auth = self.headers.get("Authorization", "")
        self.seen.append(auth)
        if not auth:
            return self._send(401, "Unauthorized: Missing authentication token", "text/plain")
        if auth != f"Bearer {self.token}":
            return self._send(403, "Forbidden: Invalid authentication token", "text/plain")
        if self.path == "/api/version":
            return self._send(200, json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}))
        if self.path.startswith("/api/jobs/"):
            return self._send(200, json.dumps({"type": "SUBMISSION", "job_id": None, "submission_id": "job1",
                                               "status": "RUNNING", "entrypoint": "python -m thresher run"}))
        return self._send(404, "not found", "text/plain")

    def _send(self, code: int, body: str, ctype: str = "application/json"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def jobs_api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), JobsApiStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    JobsApiStandIn.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def thresher(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return subprocess.run([sys.executable, "-m", "thresher", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**base, "HOME": str(home), **env})


def test_jobs_reads_the_token_from_ray_auth_token(jobs_api, tmp_path):
    write_home_token(tmp_path)
    res = thresher(tmp_path, "jobs", "status", "job1", "--address", jobs_api)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "RUNNING"
    assert set(JobsApiStandIn.seen) == {f"Bearer {TOKEN}"}  # every request carried it


def test_jobs_with_the_wrong_token_file_says_where_it_came_from(jobs_api, tmp_path):
    write_home_token(tmp_path, "not-the-token")
    res = thresher(tmp_path, "jobs", "status", "job1", "--address", jobs_api)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "rejected" in res.stderr and "the token from ~/.ray/auth_token was refused" in res.stderr
    res = thresher(tmp_path, "jobs", "status", "job1", "--address", jobs_api, RAY_AUTH_TOKEN=TOKEN)
    assert res.returncode == 0 and res.stdout.strip() == "RUNNING"  # the environment comes first
