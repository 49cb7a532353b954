"""An output on an object store (``s3://``, ``gs://``, ``az://``): staged, then published.

A run whose ``output.path`` is a URL works in a local staging directory (``fs.staging_dir``: its
lock, ``_work/``, done markers and parts, with every local guarantee: atomic parts, a retried task
rewrites the same names), and is published when it has finished: each file is one upload of a
complete local file — an object store makes an object visible only when its upload completes (a
single PUT, or the completion of a multipart upload), so a reader never sees part of a part — in
the order data, quarantine/trace/report, ``ledger.json``, ``_thresher.json``, and ``_SUCCESS``
last. A run killed at any point, before or during publishing, is finished by ``--resume``: the
staging directory is found again from the URL, and uploading a file twice writes the same object.

The bucket follows the rules of a local output directory (``outdir``): a prefix that holds objects
thresher did not write is refused before anything is touched; a finished output of ours is replaced
only by deleting the objects its ``_thresher.json`` lists; a half-published one needs ``--resume``
or ``--overwrite``. The lock is the staging directory's: one writer per machine (two machines
writing one prefix are not detected).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from thresher.pipeline import fs, outdir
from thresher.pipeline.errors import OutputError
from thresher.pipeline.faults import crash_point
from thresher.pipeline.layout import Layout

_LAST = (outdir.LEDGER_NAME, outdir.MANIFEST_NAME, outdir.SUCCESS_NAME)


class RemoteOutput:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fs.filesystem(self.url, output=True)
        self.root = self.root.rstrip("/")

    def _errors(self):
        return fs.errors(self.url, "output", OutputError)

    def list(self) -> list[str]:
        """Every object under the prefix, relative, sorted (an empty or missing prefix: [])."""
        with self._errors():
            self.fs.invalidate_cache()
            self._check_bucket()
            return sorted(p[len(self.root) + 1:] for p in self.fs.find(self.root) if p.startswith(self.root + "/"))

    def _check_bucket(self) -> None:
        """A missing bucket or refused credentials, said now (listing alone would only find nothing)."""
        bucket = self.root.split("/", 1)[0]
        try:
            if hasattr(self.fs, "call_s3"):  # s3fs: HeadBucket tells 404 (no bucket) from 403 (refused)
                self.fs.call_s3("head_bucket", Bucket=bucket)
            elif not self.fs.exists(bucket):
                raise FileNotFoundError(bucket)
        except FileNotFoundError:
            raise OutputError(f"output '{fs.redact(self.url)}': the bucket does not exist") from None

    def read_json(self, name: str) -> dict | None:
        with self._errors():
            try:
                obj = json.loads(self.fs.cat_file(f"{self.root}/{name}"))
            except (FileNotFoundError, ValueError):
                return None
        return obj if isinstance(obj, dict) else None

    def prepare(self, layout: Layout, resume: bool, overwrite: bool) -> str:
        """Check the prefix before anything is touched; returns 'empty', 'finished' (a finished run
        there, which --resume keeps) or 'unfinished' (a run that was being published). Clears what a
        new run replaces."""
        present = self.list()
        if not present:
            return "empty"
        manifest = self.read_json(outdir.MANIFEST_NAME)
        finished = outdir.SUCCESS_NAME in present and manifest is not None and isinstance(manifest.get("files"), list)
        own = (set(manifest["files"]) | {outdir.MANIFEST_NAME, outdir.SUCCESS_NAME} if finished
               else {f for f in present if any(p.fullmatch(f) for p in outdir._OWN_PATTERNS)})
        foreign = sorted(set(present) - own)
        if foreign:
            raise OutputError(f"output '{fs.redact(self.url)}' holds objects thresher did not write "
                              f"({outdir.describe(foreign)}); choose another --output — nothing was deleted")
        if finished and resume:
            return "finished"
        if not finished and not overwrite:
            if not resume:
                raise OutputError(f"output '{fs.redact(self.url)}' holds an unfinished run; pass --resume to finish "
                                  "it or --overwrite to start again")
            if not (layout.manifest.is_file() or layout.success.is_file()):
                raise OutputError(f"cannot resume '{fs.redact(self.url)}': its staging directory ({layout.out}) is "
                                  "gone (another machine, or it was deleted); --overwrite starts again")
            return "unfinished"
        self.remove(sorted(set(present) & own))
        return "empty"

    def remove(self, names: list[str]) -> None:
        """Delete ``names``, ``_SUCCESS`` first: the output stops being complete before it changes."""
        names = sorted(names, key=lambda n: n != outdir.SUCCESS_NAME)
        with self._errors():
            for n in names:
                self.fs.rm_file(f"{self.root}/{n}")

    def publish(self, layout: Layout) -> list[str]:
        """Upload a finished staged output, ``_SUCCESS`` last, then drop the staging directory."""
        manifest = outdir.read_json(layout.out / outdir.MANIFEST_NAME)
        if manifest is None or not layout.success.is_file():
            raise OutputError(f"cannot publish '{fs.redact(self.url)}': the staged run in {layout.out} is not finished")
        files = [f for f in manifest["files"] if f not in _LAST]
        files.sort(key=lambda f: not f.startswith("data/"))  # the rows first; the ledger and markers last
        with self._errors():
            for i, name in enumerate(files + [outdir.LEDGER_NAME, outdir.MANIFEST_NAME]):
                self._put(layout.out / name, name)
                if i == 0:
                    crash_point("publishing")
            self.fs.invalidate_cache()
            stale = [f for f in self.list() if f not in set(manifest["files"]) | {outdir.MANIFEST_NAME}
                     and any(p.fullmatch(f) for p in outdir._OWN_PATTERNS) and f != outdir.SUCCESS_NAME]
            self.remove(stale)  # parts of an earlier, killed attempt that this run did not write again
            crash_point("before-remote-success")
            self.fs.pipe_file(f"{self.root}/{outdir.SUCCESS_NAME}", b"ok\n")
        shutil.rmtree(layout.out, ignore_errors=True)
        return files

    def _put(self, local: Path, name: str) -> None:
        if not local.is_file():  # never publish an output with a hole in it
            raise OutputError(f"cannot publish '{fs.redact(self.url)}': {name} is not in the staging directory "
                              f"{local.parent} on this machine (Ray workers on other nodes wrote it to their own "
                              "disk: set THRESHER_STAGING to a directory every node shares; docs/storage.md)")
        self.fs.put_file(str(local), f"{self.root}/{name}")


def check_cluster_staging(recipe) -> None:
    """A Ray cluster's workers write their parts into the staging directory of their own node: an
    object-store output from a cluster needs ``THRESHER_STAGING`` on storage every node shares
    (refused before any work, rather than found missing at the end)."""
    import os

    if recipe.executor.type == "ray" and (recipe.executor.address or os.environ.get("RAY_ADDRESS")) \
            and not os.environ.get("THRESHER_STAGING"):
        raise OutputError(f"output '{fs.redact(recipe.output.path)}' from a Ray cluster: set THRESHER_STAGING to a "
                          "directory every node of the cluster shares (NFS, EFS, Filestore, a ReadWriteMany volume) "
                          "— the workers stage their parts there before they are published (docs/storage.md)")


def check_not_overlapping(url: str, input_urls: list[str]) -> None:
    """Refuse an output URL that is, is inside, or contains an input (compared as URL prefixes)."""
    o = url.rstrip("/") + "/"
    for i in input_urls:
        if not fs.is_url(i):
            continue
        i = fs.url_glob_root(i.split("?", 1)[0]).rstrip("/") + "/"
        if o == i or o.startswith(i) or i.startswith(o):
            raise OutputError(f"the output '{fs.redact(url)}' overlaps the input '{fs.redact(i.rstrip('/'))}'; "
                              "write the output somewhere else")
