"""Submit recipes to a Ray cluster through Ray's Jobs API (``JobSubmissionClient``).

The recipe and thresher's own packages travel with the job (``runtime_env``: ``working_dir`` holds
the recipe, ``py_modules`` thresher's code; ``pip`` installs thresher's dependencies on the workers
unless the cluster's image already has them). Token authentication (Ray >= 2.60's default) is
passed through from the environment: ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` (or Ray's own
``~/.ray/auth_token``); the token never goes into a file that is submitted.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from importlib.metadata import requires
from pathlib import Path

from pipeline.errors import ThresherError
from pipeline.recipe import find_recipe

PACKAGES = ("pipeline", "operators", "cluster", "capacity", "recipes")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def auth_headers() -> dict[str, str]:
    """Authorization header from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH, if set."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise ThresherError(f"RAY_AUTH_TOKEN_PATH '{path}' cannot be read: {e}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as e:  # noqa: BLE001 - connection, auth: one clear message
        raise ThresherError(_explain(e, address)) from None


def _explain(e: Exception, address: str) -> str:
    text = str(e)
    if "Authentication" in type(e).__name__ or "Authentication" in text or "401" in text or "403" in text:
        return (f"the Ray cluster at {address} rejected the request: its token authentication needs the "
                "cluster's token. Set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the token the head was started "
                f"with (`ray get-auth-token` on the head). Ray said: {text.splitlines()[0][:200]}")
    if "Connection" in text or "connect" in text:
        return f"cannot reach the Ray dashboard at {address}: {text.splitlines()[0][:200]}"
    return f"Ray Jobs API at {address}: {text.splitlines()[0][:300]}"


def _call(address: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise ThresherError(_explain(e, address)) from None


def dependencies() -> list[str]:
    """thresher's own requirements (for the workers' pip runtime env), Ray excluded (it is there)."""
    try:
        reqs = requires("thresher") or []
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        reqs = []
    return [r for r in reqs if "extra ==" not in r and not r.lower().startswith("ray")]


def runtime_env(recipe_dir: Path, install: str, env_vars: dict[str, str]) -> dict:
    import importlib

    env: dict = {"working_dir": str(recipe_dir),
                 "py_modules": [str(Path(importlib.import_module(p).__file__).parent) for p in PACKAGES],
                 "env_vars": env_vars}
    if install == "pip":
        env["pip"] = dependencies()
    return env


def submit(recipe: str, address: str, sets: list[str] | None = None, inputs: list[str] | None = None,
           output: str | None = None, install: str = "pip", job_id: str | None = None,
           env_vars: dict[str, str] | None = None) -> str:
    """Package the recipe and thresher, submit ``thresher run`` as a Ray job; returns the job id."""
    path = find_recipe(recipe)
    tmp = Path(tempfile.mkdtemp(prefix="thresher-job-"))
    try:
        shutil.copy(path, tmp / "recipe.yaml")
        args = ["run", "recipe.yaml", "--executor", "ray", "-q"]
        for s in sets or []:
            args += ["--set", s]
        if inputs:
            args += ["--input", *inputs]
        if output:
            args += ["--output", output]
        entrypoint = "python -m pipeline.cli " + " ".join(_quote(a) for a in args)
        c = client(address)
        return _call(address, c.submit_job, entrypoint=entrypoint, submission_id=job_id,
                     runtime_env=runtime_env(tmp, install, env_vars or {}),
                     metadata={"tool": "thresher", "recipe": Path(path).name})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


def status(job_id: str, address: str) -> str:
    return str(_call(address, client(address).get_job_status, job_id)).split(".")[-1]


def logs(job_id: str, address: str) -> str:
    return _call(address, client(address).get_job_logs, job_id)


def stop(job_id: str, address: str) -> bool:
    return bool(_call(address, client(address).stop_job, job_id))


def wait(job_id: str, address: str, timeout: float = 3600, follow: bool = False, out=sys.stdout) -> str:
    """Poll until the job ends; with ``follow``, print new log text as it arrives."""
    c = client(address)
    deadline = time.time() + timeout
    seen = 0
    while True:
        st = str(_call(address, c.get_job_status, job_id)).split(".")[-1]
        if follow:
            text = _call(address, c.get_job_logs, job_id)
            out.write(text[seen:])
            out.flush()
            seen = len(text)
        if st in TERMINAL:
            return st
        if time.time() > deadline:
            raise ThresherError(f"job {job_id} did not finish within {timeout:.0f} s (status {st})")
        time.sleep(1.0)

