"""One installed import name (issue 13, item 1): a wheel holds only ``thresher/``; both a wheel
install and an editable install work in a fresh virtual environment, from a directory that holds
its own ``pipeline.py`` and ``recipes/`` (which must neither shadow thresher nor be shadowed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("pipeline", "operators", "cluster", "capacity", "recipes")


def test_every_package_folder_is_in_the_distribution():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {"thresher"} | {
        "thresher." + str(p.parent.relative_to(ROOT)).replace(os.sep, ".")
        for part in PARTS for p in (ROOT / part).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert on_disk == listed
    assert all(cfg["package-dir"][f"thresher.{p}"] == p for p in PARTS)


def test_the_version_is_written_once():
    import thresher
    from thresher.pipeline import __version__ as engine_version

    hits = [p for p in ROOT.rglob("*.py") if not {".venv", "tests", "build"} & set(p.parts)
            and "__version__ = " in p.read_text()]
    assert hits == [ROOT / "thresher" / "__init__.py"]
    assert engine_version == thresher.__version__
    assert 'dynamic = ["version"]' in (ROOT / "pyproject.toml").read_text()


@pytest.fixture
def fresh_venv(tmp_path_factory):
    """A new virtual environment whose third-party packages come from this one (links to each, in a
    folder its .pth names), so installing thresher there needs no download; thresher itself (its
    metadata and editable finder) is left out, so the new environment starts without it. One per
    test: an uninstall leaves files thresher wrote at run time (numba's kernel caches) behind."""
    d = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d / "env")], check=True)
    py = d / "env" / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = d / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if "thresher" not in entry.name.lower() and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    (site / "deps.pth").write_text(f"{deps}\n")
    res = subprocess.run([py, "-c", "import thresher"], capture_output=True, text=True, cwd=d)
    assert res.returncode != 0, "thresher is visible before it is installed"
    return d, py


def _user_dir(base: Path) -> Path:
    """A user's notebook folder with its own pipeline.py and recipes/."""
    u = base / "notebook"
    (u / "recipes").mkdir(parents=True)
    (u / "pipeline.py").write_text("MINE = 'the user pipeline'\n")
    (u / "recipes" / "__init__.py").write_text("MINE = 'the user recipes'\n")
    return u


CHECK = """
import pipeline, recipes, thresher, thresher.pipeline.run, thresher.api
assert pipeline.MINE == 'the user pipeline' and recipes.MINE == 'the user recipes'
from thresher.pipeline.recipe import shipped_recipes
assert 'quickstart' in shipped_recipes(), shipped_recipes()
print(thresher.__version__, thresher.__file__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["wheel", "editable"])
def test_install_in_a_fresh_venv_and_run_beside_user_modules(fresh_venv, tmp_path, mode):
    d, py = fresh_venv
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-build-isolation"]
    if mode == "wheel":
        wheels, src = tmp_path / "wheels", tmp_path / "src"  # built from a copy: setuptools leaves build/ behind
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(wheels), str(src)], check=True, capture_output=True)
        (wheel,) = wheels.glob("thresher-*.whl")
        tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
        version = wheel.name.split("-")[1]
        assert tops == {"thresher", f"thresher-{version}.dist-info"}  # no pipeline/, operators/, ... beside it
        subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    else:
        subprocess.run([*pip, "-e", str(ROOT)], check=True, capture_output=True)
    try:
        user = _user_dir(tmp_path)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        res = subprocess.run([py, "-c", CHECK], cwd=user, capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
        where = res.stdout.split()[1]
        assert (ROOT.as_posix() in where) == (mode == "editable")
        run = subprocess.run([py, "-m", "thresher", "run", "quickstart", "-q", "--output", str(user / "out")],
                             cwd=user, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        assert (user / "out" / "_SUCCESS").exists()
    finally:
        subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "uninstall", "-q", "-y", "thresher"],
                       capture_output=True)
