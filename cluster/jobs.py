"""Submit recipes to a Ray cluster through Ray's Jobs API (``JobSubmissionClient``).

The recipe and thresher's own packages travel with the job (``runtime_env``: ``working_dir`` holds
the recipe, ``py_modules`` thresher's code; ``pip`` installs thresher's dependencies on the workers
unless the cluster's image already has them). Token authentication (Ray >= 2.60's default) is
sent as the ``Authorization`` header, found as Ray finds it: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
then Ray's own ``~/.ray/auth_token`` (``cluster.auth``); the token never goes into a file that is submitted.

Plugins travel too: the packages that define the recipe's non-built-in ops go into ``py_modules``
beside thresher (a plugin that is a single ``.py`` module is copied into the job's working directory,
which is on the job's path: the Jobs client uploads only folders as ``py_modules``), their modules
are named in ``THRESHER_PLUGINS`` so the
registry on the cluster imports them (shipped code has no installed metadata, so no entry point),
and with ``--install pip`` their own requirements are installed. An op whose code cannot be shipped
(defined in ``__main__`` or inside a function, a compiled module, a package split over several
folders) is refused before anything is submitted, with what to do instead.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import requires
from pathlib import Path

from thresher.cluster.auth import auth_headers, find_token
from thresher.pipeline.errors import ThresherError
from thresher.pipeline.recipe import find_recipe

SUBPACKAGES = ("pipeline", "operators", "cluster", "capacity", "recipes")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as e:  # noqa: BLE001 - connection, auth: one clear message
        raise ThresherError(_explain(e, address)) from None


def _explain(e: Exception, address: str) -> str:
    text = str(e)
    if "Authentication" in type(e).__name__ or "Authentication" in text or "401" in text or "403" in text:
        token, where = find_token()
        sent = f"the token from {where} was refused" if token else "no token was sent (none found)"
        return (f"the Ray cluster at {address} rejected the request: its token authentication needs the "
                f"cluster's token, and {sent}. Set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token) "
                f"to the token the head was started with (`ray get-auth-token` on the head). "
                f"Ray said: {text.splitlines()[0][:200]}")
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


def stage_package(dest: Path) -> Path:
    """A copy of the ``thresher`` package as one folder (``dest/thresher``), however it is installed:
    a wheel has its parts inside it, an editable install maps them from the repository's top-level
    folders. Ray's ``py_modules`` ships a folder."""
    import importlib

    import thresher

    pkg = dest / "thresher"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(thresher.__file__).parent, pkg, ignore=ignore, dirs_exist_ok=True)
    for sub in SUBPACKAGES:
        src = Path(importlib.import_module(f"thresher.{sub}").__file__).parent
        if src != pkg / sub:
            shutil.copytree(src, pkg / sub, ignore=ignore, dirs_exist_ok=True)
    return pkg


@dataclass
class Plugins:
    """The plugin code a job needs."""

    paths: list[str] = field(default_factory=list)  # package folders, for py_modules
    files: list[str] = field(default_factory=list)  # single-module plugins (.py), for the working directory
    imports: list[str] = field(default_factory=list)  # "module:Class" of each op, for THRESHER_PLUGINS
    requirements: list[str] = field(default_factory=list)  # the plugins' own dependencies (for pip)


SHIP_HELP = ("put the op in a package, or in a single .py module, that defines it at module level "
             "(docs/writing-operators.md, 'Plugins on a cluster'), and install it where you submit from")


def ship_plugins(classes) -> Plugins:
    """What the job must carry so the cluster defines the op classes ``classes``: each one's
    top-level package folder (``py_modules``) or single ``.py`` file (the working directory). Raises
    a one-line error for an op whose code cannot travel that way."""
    from thresher.pipeline.registry import op_origin

    out = Plugins()
    for cls in classes:
        where = f"{cls.__module__}.{cls.__qualname__}"
        if "<locals>" in cls.__qualname__:
            raise ThresherError(f"op '{cls.name}' is defined inside a function ({where}); thresher submit "
                                f"cannot ship it: {SHIP_HELP}")
        top_name = cls.__module__.split(".")[0]
        top = sys.modules.get(top_name)
        if top_name == "__main__" or top is None:
            raise ThresherError(f"op '{cls.name}' is defined in {where}, not in an importable module; thresher submit "
                                f"cannot ship it: {SHIP_HELP}")
        folders = list(getattr(top, "__path__", None) or [])
        if hasattr(top, "__path__"):
            if len(folders) != 1:
                raise ThresherError(f"op '{cls.name}' comes from package '{top_name}', which is split over "
                                    f"{len(folders)} folders ({', '.join(folders)}); Ray's py_modules ships one "
                                    f"folder per package: {SHIP_HELP}")
            path = folders[0]
        else:
            path = getattr(top, "__file__", None) or ""
            if not path.endswith(".py"):
                raise ThresherError(f"op '{cls.name}' comes from module '{top_name}' ({path or 'no file'}), which is "
                                    f"not Python source; thresher submit ships packages and .py files: {SHIP_HELP}")
        shipped = out.paths if folders else out.files
        if path not in shipped:
            shipped.append(path)
        out.imports.append(f"{cls.__module__}:{cls.__qualname__}")
        dist = op_origin(cls).distribution
        for req in plugin_requirements(dist) if dist else []:
            if req not in out.requirements:
                out.requirements.append(req)
    return out


def plugin_requirements(distribution: str) -> list[str]:
    """A plugin distribution's own requirements, less thresher and Ray (the job has both)."""
    try:
        reqs = requires(distribution) or []
    except Exception:  # noqa: BLE001 - no metadata: nothing more to install
        return []
    return [r for r in reqs if "extra ==" not in r
            and re.split(r"[\s<>=!~;\[(]", r.strip(), maxsplit=1)[0].lower() not in ("ray", "thresher")]


def recipe_plugins(path: Path, sets: list[str] | None, inputs: list[str] | None, output: str | None) -> Plugins:
    """The plugins that define the ops the recipe runs (those it expands into included). A recipe
    that does not load here (a variable only the cluster sets) ships every installed plugin."""
    from thresher.pipeline.recipe import load_recipe
    from thresher.pipeline.registry import all_ops, is_builtin

    try:
        classes = {type(op) for op in load_recipe(str(path), sets, inputs=inputs, output=output).build_ops()}
    except ThresherError:  # checked again where it runs, with the cluster's environment
        classes = set(all_ops().values())
    return ship_plugins(sorted((c for c in classes if not is_builtin(c)), key=lambda c: c.name))


def runtime_env(recipe_dir: Path, install: str, env_vars: dict[str, str], plugins: Plugins | None = None) -> dict:
    from thresher.pipeline.registry import PLUGINS_ENV

    staged = recipe_dir.parent / f"{recipe_dir.name}-pkg"
    plugins = plugins or Plugins()
    for f in plugins.files:  # the working directory is on the job's path (driver and workers)
        shutil.copy(f, recipe_dir / Path(f).name)
    env_vars = dict(env_vars)
    if plugins.imports:  # added to what the user set, if anything
        env_vars[PLUGINS_ENV] = ",".join(x for x in [env_vars.get(PLUGINS_ENV, ""), *plugins.imports] if x)
    env: dict = {"working_dir": str(recipe_dir), "py_modules": [str(stage_package(staged)), *plugins.paths],
                 "env_vars": env_vars}
    if install == "pip":
        env["pip"] = dependencies() + [r for r in plugins.requirements if r not in dependencies()]
    return env


def submit(recipe: str, address: str, sets: list[str] | None = None, inputs: list[str] | None = None,
           output: str | None = None, install: str = "pip", job_id: str | None = None,
           env_vars: dict[str, str] | None = None) -> str:
    """Package the recipe and thresher, submit ``thresher run`` as a Ray job; returns the job id.

    The run is not quiet: the job's log (``thresher jobs logs``) ends with the ledger table and the
    rows written, as a local run's terminal does. Its stdout is no terminal, so no progress bar
    fills the log."""
    path = find_recipe(recipe)
    plugins = recipe_plugins(path, sets, inputs, output)  # before anything is staged: it may refuse
    tmp = Path(tempfile.mkdtemp(prefix="thresher-job-"))
    try:
        shutil.copy(path, tmp / "recipe.yaml")
        args = ["run", "recipe.yaml", "--executor", "ray"]
        for s in sets or []:
            args += ["--set", s]
        if inputs:
            args += ["--input", *inputs]
        if output:
            args += ["--output", output]
        entrypoint = "python -m thresher " + " ".join(_quote(a) for a in args)
        c = client(address)
        return _call(address, c.submit_job, entrypoint=entrypoint, submission_id=job_id,
                     runtime_env=runtime_env(tmp, install, env_vars or {}, plugins),
                     metadata={"tool": "thresher", "recipe": Path(path).name})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(tmp.parent / f"{tmp.name}-pkg", ignore_errors=True)


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

