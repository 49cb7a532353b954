"""Job submission for real: a Ray head started with `ray start --head` on 127.0.0.1 (token auth on,
its own temp dir), `thresher submit` of a recipe, the output and ledger checked, the head stopped.
A wrong token gives a clear error."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# starting the Ray head takes ~10 s, the submitted run ~30 s more
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the ray command is not installed")
    try:
        import aiohttp  # noqa: F401 - the dashboard (Jobs API) needs ray[default]
    except ImportError:
        pytest.skip("ray[default] (dashboard) is not installed")
    token = secrets.token_hex(16)
    temp = Path(tempfile_dir := str(tmp_path_factory.mktemp("rayhead")))
    gcs, dash = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           # the job's `python` is the cluster's: this environment's, as on a cluster built from it
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    start = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", "--num-cpus=2", f"--temp-dir={tempfile_dir}", "--disable-usage-stats"]
    res = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        pytest.fail(f"ray start failed: {res.stderr[-2000:]}")
    address = f"http://127.0.0.1:{dash}"
    try:  # the head is stopped even when it never comes up (it used to outlive a failed setup)
        for _ in range(60):  # wait for the Jobs API
            try:
                socket.create_connection(("127.0.0.1", dash), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        _wait_until_jobs_are_accepted(address, token)
        yield {"address": address, "token": token, "gcs": gcs, "temp": temp}
    finally:
        _stop_head(tempfile_dir, gcs)


def _wait_until_jobs_are_accepted(address: str, token: str, timeout: float = 300) -> None:
    """The dashboard's port opens before the head's job agent has registered; until it has, a
    submission fails with "No available agent to submit job" (seen on a loaded 2-core machine, for
    more than two minutes at a load of 10). A trivial probe job, retried, tells when the head takes jobs."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    deadline = time.time() + timeout
    while True:
        try:
            client.submit_job(entrypoint="true")
            return
        except Exception as e:  # noqa: BLE001 - Ray raises RuntimeError with the server's text
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


def _stop_head(temp_dir: str, gcs_port: int) -> None:
    """Stop this head's processes only (`ray stop` would also stop the test session's own local Ray)."""
    import psutil

    mine = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if temp_dir in cmd or f"127.0.0.1:{gcs_port}" in cmd or f"--gcs_server_port={gcs_port}" in cmd:
            mine.append(p)
    for p in mine:
        for child in p.children(recursive=True):
            child.kill()
        p.kill()
    psutil.wait_procs(mine, timeout=30)


def thresher(*args, token: str, **kw):
    env = {**os.environ, "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "thresher", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600, **kw)


def test_submit_recipe_and_follow_it(ray_head, tmp_path):
    out = tmp_path / "out"
    res = thresher("submit", "quickstart", "--address", ray_head["address"], "--install", "none",
                   "--output", str(out), "--wait", "--env", f"RAY_ADDRESS=127.0.0.1:{ray_head['gcs']}",
                   "--env", f"THRESHER_CACHE={tmp_path / 'cache'}", token=ray_head["token"])
    assert res.returncode == 0, res.stdout + res.stderr
    job_id = res.stdout.strip().splitlines()[0]
    assert job_id.startswith("raysubmit_")
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["balanced"] and ledger["run"]["executor"] == "ray" and ledger["totals"]["output"] > 1000
    st = thresher("jobs", "status", job_id, "--address", ray_head["address"], token=ray_head["token"])
    assert st.stdout.strip() == "SUCCEEDED"
    logs = thresher("jobs", "logs", job_id, "--address", ray_head["address"], token=ray_head["token"])
    assert logs.returncode == 0 and "Ray cluster" in logs.stdout
    # the job's log ends with the run's ledger table: a row per op with its counts, then the total
    # (the job was once run with -q and its log said nothing about the data)
    lines = logs.stdout.splitlines()
    for key, entry in ledger["ops"].items():
        assert any(key in line and f"{entry['rows_in']:,}" in line and f"{entry['rows_out']:,}" in line
                   for line in lines), f"no ledger row for {key} in the job log:\n{logs.stdout[-3000:]}"
    assert f"wrote {ledger['totals']['output']:,} rows" in logs.stdout


def test_wrong_token_is_a_clear_error(ray_head):
    res = thresher("submit", "quickstart", "--address", ray_head["address"], "--install", "none",
                   token="not-the-token")
    assert res.returncode == 2
    assert "rejected" in res.stderr and "RAY_AUTH_TOKEN" in res.stderr and "Traceback" not in res.stderr


def _without_token(home: Path, **env: str) -> dict[str, str]:
    """This environment with no token anywhere Ray looks (HOME is a fresh folder), plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    return {**base, "HOME": str(home), **env}


def test_jobs_reads_the_token_from_ray_auth_token(ray_head, tmp_path):
    """docs/cli.md: with neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH, Ray's ~/.ray/auth_token."""
    from ray.job_submission import JobSubmissionClient

    job_id = JobSubmissionClient(ray_head["address"], headers={"Authorization": f"Bearer {ray_head['token']}"}
                                 ).submit_job(entrypoint="true")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text(ray_head["token"] + "\n")
    res = subprocess.run([sys.executable, "-m", "thresher", "jobs", "status", job_id, "--address", ray_head["address"]],
                         cwd=ROOT, env=_without_token(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() in {"PENDING", "RUNNING", "SUCCEEDED"}


def test_ray_executor_without_the_token_says_what_to_set(ray_head, tmp_path):
    """`--executor ray` against the token-protected head: not "cannot connect", but what to set."""
    args = [sys.executable, "-m", "thresher", "run", "quickstart", "--executor", "ray", "-q", "--overwrite",
            "--output", str(tmp_path / "out")]
    gcs = f"127.0.0.1:{ray_head['gcs']}"
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=_without_token(tmp_path, RAY_ADDRESS=gcs, THRESHER_CACHE=str(tmp_path / "cache")))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    error = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert error and "requires token authentication: set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN" \
        in error[0], res.stderr[-2000:]
    res = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,  # the mode, no token
                         env=_without_token(tmp_path, RAY_ADDRESS=gcs, RAY_AUTH_MODE="token",
                                            THRESHER_CACHE=str(tmp_path / "cache")))
    assert res.returncode == 2 and "set the cluster's token in RAY_AUTH_TOKEN" in res.stderr, res.stderr[-2000:]
