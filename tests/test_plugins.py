"""Plugins for real (issue 13): plugin projects written here are installed with pip into folders of
their own (never into the project's environment), which go on ``sys.path`` (in-process tests) or
``PYTHONPATH`` (commands), so ``importlib.metadata`` finds their ``thresher.operators`` entry
points as it would after a ``pip install``. Recipes with plugin ops run in-process, from the command
line, on a local Ray and through ``thresher submit`` to a Ray head that does not have the plugin; a
broken plugin is one line of warning; docs/writing-operators.md is built and run as a project."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.cluster.test_jobs import _stop_head, free_port
from tests.conftest import read_output, write_jsonl
from thresher.pipeline.errors import ThresherError

ROOT = Path(__file__).resolve().parents[1]

DEMO = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "thresher-demo-plugin"
        version = "0.1"

        [project.entry-points."thresher.operators"]
        demo = "demo_plugin"                  # a package: it and its modules are imported
        shout = "demo_plugin.shout:Shout"     # one class, registered by thresher
        single = "demo_single"                # a plugin that is one module file

        [tool.setuptools]
        packages = ["demo_plugin"]
        py-modules = ["demo_single"]
        """,
    "demo_plugin/__init__.py": '"""Demo ops for thresher\'s tests."""\n',
    "demo_plugin/ops.py": '''
        """A filter."""

        import numpy as np
        import pyarrow as pa
        from pydantic import Field

        from thresher.api import Filter, OpParams, bounds_masks, register


        @register
        class BannedWords(Filter):
            """Drop documents that contain a banned word, or have too few words."""

            name = "demo_banned_words"
            stats = {"banned": "banned words", "words": "whitespace-separated words"}
            example = {"words": ["spam"], "min_words": 2}

            class Params(OpParams):
                words: list[str] = Field(["spam"], description="words that drop a document")
                min_words: int = Field(2, ge=0, description="drop documents with fewer words")

            def compute_stats(self, batch):
                texts = [(t or "").lower().split() for t in batch[self.text_key].to_pylist()]
                banned = set(self.params.words)
                return {"banned": pa.array([sum(w in banned for w in ws) for ws in texts], pa.int64()),
                        "words": pa.array([len(ws) for ws in texts], pa.int64())}

            def drop_reasons(self, stats):
                few, _ = bounds_masks(stats["words"], lo=self.params.min_words)
                return {"banned word": np.asarray(stats["banned"]) > 0, "too few words": few}
        ''',
    "demo_plugin/shout.py": '''
        """A mapper registered by its entry point (no @register)."""

        import numpy as np
        import pyarrow.compute as pc

        from thresher.api import Mapper, OpParams, set_column


        class Shout(Mapper):
            """Upper-case the text; documents that are blank are dropped."""

            name = "demo_shout"
            example = {}

            def process(self, batch):
                blank = np.array([not (t or "").strip() for t in batch[self.text_key].to_pylist()], dtype=bool)
                return set_column(batch, self.text_key, pc.utf8_upper(batch[self.text_key])), {"blank": blank}
        ''',
    "demo_single.py": '''
        """A plugin that is a single module."""

        import pyarrow as pa
        from pydantic import Field

        from thresher.api import Mapper, OpParams, register, set_column


        @register
        class Tag(Mapper):
            """Write a tag column on every row."""

            name = "demo_tag"
            example = {"value": "demo"}

            class Params(OpParams):
                value: str = Field("demo", description="the tag")

            def process(self, batch):
                return set_column(batch, "tag", pa.array([self.params.value] * batch.num_rows, pa.string()))
        ''',
}

BROKEN = {
    "pyproject.toml": """
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "broken-thresher-plugin"
        version = "0.2"

        [project.entry-points."thresher.operators"]
        broken = "broken_plugin"

        [tool.setuptools]
        packages = ["broken_plugin"]
        """,
    "broken_plugin/__init__.py": "import unobtainium  # not installed anywhere\n",
}

RECIPE_OPS = [{"demo_shout": {}}, {"demo_banned_words": {"words": ["spam"], "min_words": 2}},
              {"demo_tag": {"value": "t1"}}]
ROWS = [{"id": "a", "text": "a fine day"}, {"id": "b", "text": "buy spam now"}, {"id": "c", "text": "   "},
        {"id": "d", "text": "hi"}, {"id": "e", "text": "two words"}]
EXPECTED = [{"id": "a", "text": "A FINE DAY", "tag": "t1"}, {"id": "e", "text": "TWO WORDS", "tag": "t1"}]


def _write_project(root: Path, files: dict[str, str]) -> Path:
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return root


def pip_install(project: Path, target: Path) -> Path:
    """``pip install --no-deps --target`` a project, as a user installs a plugin. Without a local
    build backend that makes wheels (setuptools >= 70.1, or the wheel package), pip builds in
    isolation with setuptools from the package index."""
    import setuptools

    local = importlib.util.find_spec("wheel") is not None or tuple(
        int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2]) >= (70, 1)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(project)]
    if local:
        cmd.insert(4, "--no-build-isolation")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"pip could not install {project.name}: {res.stderr[-2000:]}"
    return target


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("demo-plugin")
    return pip_install(_write_project(base / "project", DEMO), base / "site")


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("broken-plugin")
    return pip_install(_write_project(base / "project", BROKEN), base / "site")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real `ray start --head` (token auth, its own temp dir), as tests/cluster/test_jobs.py starts
    one, started without the plugin on its path. Every port it opens is a free one: Ray's fixed
    defaults (the dashboard agent's 52365) are taken when another Ray runs on the machine, and then
    the head never accepts a job ("No available agent")."""
    import secrets
    import shutil
    import socket

    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None or importlib.util.find_spec("aiohttp") is None:
        pytest.skip("the ray command with its dashboard (ray[default]) is not installed")
    token = secrets.token_hex(16)
    temp = str(tmp_path_factory.mktemp("rayhead"))
    gcs, dash = free_port(), free_port()
    env = {**_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    start = [ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={free_port()}",
             f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
             f"--metrics-export-port={free_port()}", "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"]
    res = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        _stop_head(temp, gcs)
        pytest.fail(f"ray start failed: {res.stderr[-2000:]}")
    for _ in range(60):  # the Jobs API
        try:
            socket.create_connection(("127.0.0.1", dash), timeout=1).close()
            break
        except OSError:
            time.sleep(1)
    from tests.cluster.test_jobs import _wait_until_jobs_are_accepted

    _wait_until_jobs_are_accepted(f"http://127.0.0.1:{dash}", token)  # the port opens before the job agent
    yield {"address": f"http://127.0.0.1:{dash}", "token": token, "gcs": gcs}
    _stop_head(temp, gcs)


@pytest.fixture
def demo_loaded(demo_site, monkeypatch):
    """The demo plugin loaded into this process's registry, which is restored afterwards."""
    from thresher.pipeline import registry

    registry.load_all()
    for name in ("_REGISTRY", "_ALIASES", "_PKG_DIST"):
        monkeypatch.setattr(registry, name, dict(getattr(registry, name)))
    monkeypatch.setattr(registry, "_SEEN", set(registry._SEEN))
    monkeypatch.setattr(registry, "_ENV_PKGS", set(registry._ENV_PKGS))
    monkeypatch.setattr(registry, "_FAILURES", list(registry._FAILURES))
    monkeypatch.syspath_prepend(str(demo_site))
    assert registry.load_plugins() == []
    yield demo_site
    for mod in [m for m in sys.modules if m.split(".")[0] in ("demo_plugin", "demo_single")]:
        del sys.modules[mod]


def _env(*paths: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS", "THRESHER_PLUGINS")}
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    return {**env, **extra}


def cli(*args: str, env: dict[str, str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thresher", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def _recipe_file(tmp_path: Path, out: Path, ops=RECIPE_OPS) -> Path:
    import yaml

    data = write_jsonl(tmp_path / "in.jsonl", ROWS)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"input": {"paths": [str(data)]}, "output": {"path": str(out)},
                                      "process": ops}), encoding="utf-8")
    return recipe


def _check_output(out: Path) -> None:
    assert read_output(out) == EXPECTED
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["status"] == "succeeded"
    assert ledger["ops"]["demo_shout"]["dropped"] == {"blank": 1}
    assert ledger["ops"]["demo_banned_words"]["dropped"] == {"banned word": 1, "too few words": 1}


# --------------------------------------------------------------------------------- loading


def test_both_entry_point_forms_load_and_name_their_distribution(demo_loaded):
    from thresher.pipeline.docs import markdown, op_text
    from thresher.pipeline.registry import all_ops, builtin_ops, op_origin

    ops = all_ops()
    assert {"demo_banned_words", "demo_shout", "demo_tag"} <= set(ops)  # pkg, pkg.mod:Class, single module
    assert str(op_origin(ops["demo_banned_words"])) == "thresher-demo-plugin 0.1 (module demo_plugin.ops)"
    assert str(op_origin(ops["demo_shout"])) == "thresher-demo-plugin 0.1 (module demo_plugin.shout)"
    assert str(op_origin(ops["text_length_filter"])) == "thresher (built-in)"
    assert "defined by: thresher-demo-plugin 0.1 (module demo_plugin.ops)" in op_text(ops["demo_banned_words"])
    assert not {"demo_banned_words", "demo_shout", "demo_tag"} & set(builtin_ops())
    assert "demo_" not in markdown()


def test_a_recipe_with_plugin_ops_runs_in_process(demo_loaded, tmp_path):
    from thresher.api import run_recipe

    run = run_recipe(_recipe_file(tmp_path, tmp_path / "out"))
    assert run.rows == 2
    _check_output(tmp_path / "out")


def test_a_recipe_with_plugin_ops_runs_from_the_command_line(demo_site, tmp_path):
    out = tmp_path / "out"
    res = cli("run", str(_recipe_file(tmp_path, out)), "-q", env=_env(demo_site))
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    _check_output(out)


@pytest.mark.slow
def test_plugin_ops_run_on_a_local_ray(demo_site, tmp_path):
    """A local Ray's workers are processes started from the driver's environment: PYTHONPATH (or an
    install) is how they see the plugin. The session's in-process Ray may predate the plugin, so the
    run starts its own Ray in a command of its own."""
    out = tmp_path / "out"
    res = cli("run", str(_recipe_file(tmp_path, out)), "-q", "--executor", "ray", "--workers", "2",
              env=_env(demo_site))
    assert res.returncode == 0, res.stderr[-3000:]
    _check_output(out)
    assert json.loads((out / "ledger.json").read_text())["run"]["executor"] == "ray"


@pytest.mark.slow
def test_submit_ships_the_plugin_to_a_cluster_that_lacks_it(ray_head, demo_site, tmp_path):
    """The head was started without the plugin on its path: the job can only run if submit ships
    the plugin's package and its single-module file, and the cluster's registry imports them."""
    out = tmp_path / "out"
    recipe = _recipe_file(tmp_path, out)
    env = _env(demo_site, RAY_AUTH_TOKEN=ray_head["token"])
    probe = subprocess.run([sys.executable, "-c", "import demo_plugin"], env=_env(), capture_output=True)
    assert probe.returncode != 0  # not importable without the plugin's folder: nothing to find on the head
    for _ in range(12):  # the head's job agent may start after its dashboard answers (a loaded machine)
        res = cli("submit", str(recipe), "--address", ray_head["address"], "--install", "none", "--wait",
                  "--env", f"RAY_ADDRESS=127.0.0.1:{ray_head['gcs']}", "--env", f"THRESHER_CACHE={tmp_path / 'cache'}",
                  env=env)
        if "No available agent" not in res.stderr:
            break
        time.sleep(5)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    _check_output(out)


def test_ship_plugins_names_the_packages_and_the_single_module(demo_loaded):
    from thresher.cluster.jobs import ship_plugins
    from thresher.pipeline.registry import all_ops

    ops = all_ops()
    shipped = ship_plugins([ops["demo_banned_words"], ops["demo_shout"], ops["demo_tag"]])
    assert shipped.paths == [str(demo_loaded / "demo_plugin")]  # a package: py_modules
    assert shipped.files == [str(demo_loaded / "demo_single.py")]  # one module: into the working directory
    assert shipped.imports == ["demo_plugin.ops:BannedWords", "demo_plugin.shout:Shout", "demo_single:Tag"]


def test_submit_refuses_what_it_cannot_ship_and_says_what_to_do():
    from thresher.api import Mapper
    from thresher.cluster.jobs import ship_plugins

    class Local(Mapper):
        """Defined inside a function."""

        name = "local_op"

    with pytest.raises(ThresherError, match="inside a function.*docs/writing-operators.md"):
        ship_plugins([Local])
    Local.__qualname__ = "Local"
    Local.__module__ = "__main__"
    with pytest.raises(ThresherError, match="not in an importable module.*package, or in a single .py module"):
        ship_plugins([Local])


def test_runtime_env_adds_plugins_to_what_the_user_set(tmp_path):
    from thresher.cluster.jobs import Plugins, runtime_env

    recipe_dir = tmp_path / "job"
    recipe_dir.mkdir()
    (tmp_path / "mod.py").write_text("X = 1\n")
    env = runtime_env(recipe_dir, "pip", {"THRESHER_PLUGINS": "theirs"},
                      Plugins(paths=["/x/pkg"], files=[str(tmp_path / "mod.py")], imports=["pkg.a:A", "mod:B"],
                              requirements=["numpy>=1", "extra-dep"]))
    assert env["py_modules"][1:] == ["/x/pkg"]
    assert (recipe_dir / "mod.py").read_text() == "X = 1\n" and env["working_dir"] == str(recipe_dir)
    assert Path(env["py_modules"][0]).name == "thresher"
    assert env["env_vars"]["THRESHER_PLUGINS"] == "theirs,pkg.a:A,mod:B"
    assert "extra-dep" in env["pip"] and env["pip"].count("numpy>=1") <= 1


# --------------------------------------------------------------------------------- the command line


def test_ops_name_says_which_distribution_defines_it(demo_site):
    env = _env(demo_site)
    res = cli("ops", "demo_banned_words", env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["demo_banned_words  (filter)",
                                          "defined by: thresher-demo-plugin 0.1 (module demo_plugin.ops)"]
    assert "defined by: thresher-demo-plugin 0.1 (module demo_plugin.shout)" in cli("ops", "demo_shout", env=env).stdout
    assert "defined by: thresher (built-in)" in cli("ops", "text_length_filter", env=env).stdout
    listing = cli("ops", env=env).stdout.splitlines()
    assert any(x.startswith("demo_tag ") and x.endswith("[thresher-demo-plugin]") for x in listing)


def test_markdown_is_the_same_with_a_plugin_installed(demo_site):
    plain = cli("ops", "--markdown", env=_env())
    with_plugin = cli("ops", "--markdown", env=_env(demo_site))
    assert plain.returncode == with_plugin.returncode == 0
    assert with_plugin.stdout == plain.stdout and "demo_" not in plain.stdout


def test_a_broken_plugin_is_one_line_and_everything_else_works(demo_site, broken_site, tmp_path):
    env = _env(broken_site, demo_site)
    warning = ("warning: plugin 'broken' (from distribution broken-thresher-plugin) could not be loaded: "
               "ModuleNotFoundError: No module named 'unobtainium'")
    res = cli("ops", env=env)
    assert res.returncode == 0
    assert res.stderr.splitlines() == [warning]
    names = {line.split()[0] for line in res.stdout.splitlines()}
    assert {"text_length_filter", "exact_dedup", "demo_banned_words", "demo_shout", "demo_tag"} <= names

    out = tmp_path / "out"
    res = cli("run", str(_recipe_file(tmp_path, out)), "-q", env=env)
    assert res.returncode == 0 and res.stderr.splitlines() == [warning]
    _check_output(out)

    res = cli("run", str(_recipe_file(tmp_path, tmp_path / "out2", [{"broken_filter": {}}])), "-q", env=env)
    assert res.returncode == 2
    err = res.stderr.splitlines()
    assert err[0] == warning and len(err) == 2 and "Traceback" not in res.stderr
    assert err[1].startswith("error: unknown op 'broken_filter'.") and "plugin 'broken'" in err[1]
    assert "ModuleNotFoundError" in err[1]


def test_thresher_plugins_names_modules_without_metadata(tmp_path):
    """What the cluster does with shipped plugin code: a module on the path, named in THRESHER_PLUGINS."""
    (tmp_path / "loose_ops.py").write_text(textwrap.dedent('''
        from thresher.api import Mapper


        class Loose(Mapper):
            """Leave rows as they are."""

            name = "loose_op"
            example = {}

            def process(self, batch):
                return batch
        '''))
    env = _env(tmp_path, THRESHER_PLUGINS="loose_ops:Loose, missing_mod")
    res = cli("ops", "loose_op", env=env)
    assert res.returncode == 0, res.stderr
    assert "defined by: module loose_ops (from THRESHER_PLUGINS)" in res.stdout
    assert res.stderr.splitlines() == ["warning: plugin 'missing_mod' (from THRESHER_PLUGINS) could not be loaded: "
                                       "ModuleNotFoundError: No module named 'missing_mod'"]


# --------------------------------------------------------------------------------- the guide


GUIDE = ROOT / "docs" / "writing-operators.md"


def _guide_blocks() -> tuple[dict[str, str], list[str], str]:
    """(project files by path, the other python blocks in order, the expected `thresher ops` text)."""
    text = GUIDE.read_text(encoding="utf-8")
    files, snippets, shown = {}, [], ""
    for lang, body in re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M):
        head = re.match(r"# file: (\S+)\n", body)
        if head:
            files[head.group(1)] = body
        elif lang == "python":
            snippets.append(body)
        elif lang == "text":
            shown = body
    return files, snippets, shown


def test_the_guide_imports_only_the_public_api():
    files, snippets, _ = _guide_blocks()
    imports = re.findall(r"^\s*(?:from|import) (thresher[\w.]*)", "\n".join([*files.values(), *snippets]), flags=re.M)
    assert imports and set(imports) <= {"thresher.api", "thresher.testing"}
    assert "docs/writing-operators.md" in (ROOT / "README.md").read_text(encoding="utf-8")


RUN_BLOCKS = """
import sys
for i, path in enumerate(sys.argv[1:]):
    code = open(path, encoding="utf-8").read()
    try:
        exec(compile(code, f"docs/writing-operators.md python block {i}", "exec"), {"__name__": f"block{i}"})
    except BaseException as e:
        sys.exit(f"block {i} failed: {type(e).__name__}: {e}")
"""


@pytest.mark.slow
def test_the_guide_is_a_working_plugin(tmp_path):
    """Every block of docs/writing-operators.md: its files make a project that pip installs; its
    other Python blocks run as written (each in a fresh namespace, in one interpreter, as in a
    notebook); the project's own tests pass; `thresher ops` shows what the guide says."""
    files, snippets, shown = _guide_blocks()
    assert {"pyproject.toml", "my_ops/filters.py", "my_ops/mappers.py", "my_ops/meta.py", "my_ops/rare.py",
            "tests/test_my_ops.py"} <= set(files)
    project = tmp_path / "project"
    for rel, body in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(body, encoding="utf-8")
    site = pip_install(project, tmp_path / "site")
    env = _env(site)
    work = tmp_path / "notebook"
    work.mkdir()
    paths = []
    for i, body in enumerate(snippets):
        paths.append(work / f"block{i}.py")
        paths[-1].write_text(body, encoding="utf-8")
    res = subprocess.run([sys.executable, "-c", RUN_BLOCKS, *map(str, paths)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(snippets) >= 2

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                           env=env, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert " passed" in tests.stdout

    ops = cli("ops", "banned_words", env=env)
    assert ops.returncode == 0 and ops.stderr == ""
    assert ops.stdout.splitlines()[:2] == shown.splitlines()[:2]
