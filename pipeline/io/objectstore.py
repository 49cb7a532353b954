"""An output on an object store (``s3://``, ``gs://``, ``az://``): written straight to the bucket
by a Ray run's tasks, or staged on the driver's machine and published by a local run.

Both rest on one property of S3, GCS and Azure Blob: an object becomes visible only when its
upload completes — a single PUT, or the completion of a multipart upload — and a PUT to an
existing key replaces the object whole (AWS S3 user guide, "Amazon S3 data consistency model";
the GCS and Azure Blob docs say the same of uploads and Put Blob). So a part written under its
final key is never seen half-written, and writing it again writes the same object, not a second.

**Direct (``executor: ray``).** Nothing needs a filesystem every node shares. Each task works in
a scratch directory of its own node (``TaskWork``): it downloads what its shard reads (the previous
pass's rows and decisions, from ``_work/`` in the bucket), runs the shard exactly as on a local
disk, uploads every file it wrote under its final key — names fixed by shard, block and sequence
number, so a retried task overwrites its own parts and never leaves a duplicate — and then its
done marker (``_work/pass-K/done-SSSSS.json``), so a marker in the bucket proves its parts are
there. The driver keeps the run's small files on its own disk (lock, manifest, done markers,
decisions, ledger, report), puts the ones tasks read into ``_work/`` before each pass
(``before_pass``), reads the fingerprints of global ops from the bucket (``read_fingerprints``),
unifies Parquet schemas in place (``unify_parts``), and publishes: its own files, then the
deletion of every object of ours the finished run does not list (``_work/``, parts of a killed
attempt), and ``_SUCCESS`` last. ``--resume`` rebuilds the driver's files from ``_work/`` in the
bucket when they are gone (another machine, a new head pod: ``restore``).

**Staged (``executor: local``).** The run works in a local staging directory (``fs.staging_dir``:
lock, ``_work/``, done markers and parts) with every local guarantee, and is published when it
has finished: each file one upload of a complete local file, in the order data,
quarantine/trace/report, ``ledger.json``, ``_thresher.json``, then the stale objects deleted, then
``_SUCCESS``. A run killed before or while publishing is finished by ``--resume``.

The bucket follows the rules of a local output directory (``outdir``): a prefix that holds objects
thresher did not write is refused before anything is touched; a finished output of ours is replaced
only by deleting the objects its ``_thresher.json`` lists; a half-written one needs ``--resume``
or ``--overwrite``. The lock is the driver's staging directory's: one writer per machine (two
drivers on two machines writing one prefix are not detected).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from thresher.pipeline import fs, outdir
from thresher.pipeline.errors import OutputError
from thresher.pipeline.faults import crash_point
from thresher.pipeline.io.writers import TMP_SUFFIX, write_bytes_atomic
from thresher.pipeline.layout import Layout

_LAST = (outdir.LEDGER_NAME, outdir.MANIFEST_NAME, outdir.SUCCESS_NAME)
WORK = outdir.WORK_NAME + "/"
# the driver's files a --resume reads back from the bucket (``resolved.json`` is put last of its pass)
_RESTORED = re.compile(r"_work/(manifest\.json|pass-\d+/(done-\d{5}\.json|resolved\.json|decisions\.parquet"
                       r"|state\.parquet))")
_THREADS = 16  # concurrent requests for footers and small objects


def _own(name: str) -> bool:
    """An object name thresher writes under an output prefix (its parts, run files, ``_work/``)."""
    return name.startswith(WORK) or any(p.fullmatch(name) for p in outdir._OWN_PATTERNS)


def _rel(layout: Layout, path: Path) -> str:
    return path.relative_to(layout.out).as_posix()


class RemoteOutput:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fs.filesystem(self.url, output=True)
        self.root = self.root.rstrip("/")
        self.direct = False
        self.fingerprint = ""

    def attach(self, recipe) -> None:
        """How this run writes here: a Ray run's tasks write their parts to the bucket themselves
        (no filesystem shared by the nodes), a local run stages them on this machine."""
        self.direct = recipe.executor.type == "ray"
        self.fingerprint = recipe.fingerprint()
        recipe.storage.direct_output = self.url if self.direct else ""

    def _errors(self):
        return fs.errors(self.url, "output", OutputError)

    def key(self, name: str) -> str:
        return f"{self.root}/{name}"

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
                obj = json.loads(self.fs.cat_file(self.key(name)))
            except (FileNotFoundError, ValueError):
                return None
        return obj if isinstance(obj, dict) else None

    def prepare(self, layout: Layout, resume: bool, overwrite: bool) -> str:
        """Check the prefix before anything is touched; returns 'empty', 'finished' (a finished run
        there, which --resume keeps) or 'unfinished' (a run that was being written or published).
        Clears what a new run replaces."""
        present = self.list()
        if not present:
            return "empty"
        manifest = self.read_json(outdir.MANIFEST_NAME)
        finished = outdir.SUCCESS_NAME in present and manifest is not None and isinstance(manifest.get("files"), list)
        own = (set(manifest["files"]) | {outdir.MANIFEST_NAME, outdir.SUCCESS_NAME} if finished
               else {f for f in present if _own(f)})
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
            if self._complete(layout, present, manifest):
                return "finished"
            self._check_mode(layout, present)
            if self.direct and not layout.success.is_file():
                self.restore(layout, present)
            if not (layout.manifest.is_file() or layout.success.is_file()):
                raise OutputError(f"cannot resume '{fs.redact(self.url)}': its staging directory ({layout.out}) is "
                                  "gone (another machine, or it was deleted); --overwrite starts again")
            return "unfinished"
        self.remove(sorted(set(present) & own))
        return "empty"

    def _complete(self, layout: Layout, present: list[str], manifest: dict | None) -> bool:
        """A run killed after publishing its ``_thresher.json`` (put after every file it lists) and
        before ``_SUCCESS``: finished here, from the bucket alone (the driver's directory may be gone)."""
        if manifest is None or not isinstance(manifest.get("files"), list) or manifest.get("recipe") != self.fingerprint \
                or not set(manifest["files"]) <= set(present):
            return False
        self.remove([f for f in present if _own(f) and f not in set(manifest["files"]) | {outdir.MANIFEST_NAME}])
        with self._errors():
            self.fs.pipe_file(self.key(outdir.SUCCESS_NAME), b"ok\n")
        for p in layout.out.iterdir() if layout.out.is_dir() else []:  # a staged copy of it: published
            if p.name != outdir.LOCK_NAME:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        return True

    def _check_mode(self, layout: Layout, present: list[str]) -> None:
        """A run resumes the way it started: parts staged here (executor local) or in the bucket (ray)."""
        staged = layout.data.is_dir() and any(layout.data.iterdir())
        direct = any(f.startswith(WORK) for f in present)
        if (self.direct and staged) or (not self.direct and direct and not layout.success.is_file()):
            started = "executor.type=ray" if direct else "executor.type=local"
            raise OutputError(f"cannot resume '{fs.redact(self.url)}' with another executor: it was started with "
                              f"{started} (--set {started} --resume), or --overwrite starts again")

    def restore(self, layout: Layout, present: list[str]) -> None:
        """The driver's files of a direct run, from ``_work/`` in the bucket: when this machine has
        none (or another attempt's), all of them; else the done markers that tasks wrote after the
        driver's last write (a driver killed mid-pass)."""
        names = [f for f in present if _RESTORED.fullmatch(f)]
        if "_work/manifest.json" not in names:
            return  # killed before the first pass started: nothing of it is in the bucket
        if outdir.read_json(layout.manifest) != self.read_json("_work/manifest.json"):
            shutil.rmtree(layout.work, ignore_errors=True)
        missing = [n for n in names if not (layout.out / n).is_file()]
        with self._errors():
            got = self.fs.cat([self.key(n) for n in missing]) if missing else {}
        by_key = {k.split("://", 1)[-1]: v for k, v in got.items()}
        for n in sorted(missing, key=lambda n: n.endswith("resolved.json")):  # a resolved marker after its decisions
            path = layout.out / n
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, by_key[self.key(n)])

    def remove(self, names: list[str]) -> None:
        """Delete ``names``, ``_SUCCESS`` first: the output stops being complete before it changes."""
        names = sorted(names, key=lambda n: n != outdir.SUCCESS_NAME)
        with self._errors():
            if names and names[0] == outdir.SUCCESS_NAME:
                self.fs.rm_file(self.key(names.pop(0)))
            if names:
                self.fs.rm([self.key(n) for n in names])  # batched (S3: DeleteObjects, 1,000 a request)

    def put(self, layout: Layout, names: list[str]) -> None:
        """Upload files of ``layout`` under the same names, concurrently (each one whole object)."""
        if names:
            with self._errors():
                self.fs.put([str(layout.out / n) for n in names], [self.key(n) for n in names])

    def publish(self, layout: Layout) -> list[str]:
        """Upload a finished run's files, ``_SUCCESS`` last, then drop the staging directory. The
        parts a direct run's tasks wrote are in the bucket already: each must be there."""
        manifest = outdir.read_json(layout.out / outdir.MANIFEST_NAME)
        if manifest is None or not layout.success.is_file():
            raise OutputError(f"cannot publish '{fs.redact(self.url)}': the staged run in {layout.out} is not finished")
        files = [f for f in manifest["files"] if f not in _LAST]
        files.sort(key=lambda f: not f.startswith("data/"))  # the rows first; the ledger and markers last
        there = set(self.list()) if self.direct else set()
        with self._errors():
            for i, name in enumerate(files + [outdir.LEDGER_NAME, outdir.MANIFEST_NAME]):
                local = layout.out / name
                if local.is_file():
                    self.fs.put_file(str(local), self.key(name))
                elif name not in there:  # never publish an output with a hole in it
                    where = "the bucket" if self.direct else f"the staging directory {layout.out}"
                    raise OutputError(f"cannot publish '{fs.redact(self.url)}': {name} is not in {where}; "
                                      "--overwrite starts again")
                if i == 0:
                    crash_point("publishing")
            stale = [f for f in self.list() if f not in set(manifest["files"]) | {outdir.MANIFEST_NAME}
                     and _own(f) and f != outdir.SUCCESS_NAME]
            self.remove(stale)  # _work/, and parts of an earlier, killed attempt that this run did not write again
            crash_point("before-remote-success")
            self.fs.pipe_file(self.key(outdir.SUCCESS_NAME), b"ok\n")
        shutil.rmtree(layout.out, ignore_errors=True)
        return files


# --------------------------------------------------------------------------- direct: the driver
def before_pass(url: str, layout: Layout, k: int, shards: list, final: bool) -> None:
    """Driver, before pass ``k`` of a direct run: put the run's files its tasks read into the bucket
    (the manifest; the previous pass's decisions and state, then its resolved marker), and delete
    what an interrupted attempt left of the shards about to run (their parts, rows, fingerprints,
    quarantine), as ``passes.clean_partial`` does on a local disk."""
    remote = RemoteOutput(url)
    names = [_rel(layout, layout.manifest)]
    if k:
        names += [_rel(layout, p) for p in (layout.decisions(k - 1), layout.state(k - 1)) if p.is_file()]
    remote.put(layout, names)
    if k and layout.resolved(k - 1).is_file():
        remote.put(layout, [_rel(layout, layout.resolved(k - 1))])
    remote.remove(leftovers(remote.list(), k, {s.index for s in shards}, final))


def leftovers(names: list[str], k: int, todo: set[int], final: bool) -> list[str]:
    """The objects among ``names`` that pass ``k`` writes for the shards in ``todo``: its rows,
    fingerprints and done markers, its quarantine files, and (last pass) the data parts."""
    pattern = re.compile(rf"_work/pass-{k}/(?:rows|fp|done)-(\d{{5}})[.-].*|quarantine/pass{k}-(\d{{5}})\..*"
                         + (r"|data/part-(\d{5})-.*" if final else ""))
    out = []
    for f in names:
        m = pattern.fullmatch(f)
        if m and int(next(g for g in m.groups() if g)) in todo:
            out.append(f)
    return out


def fingerprint_urls(url: str, layout: Layout, k: int, pieces: list[tuple[int, str, int]]) -> list[str]:
    return [fs.join(url, _rel(layout, layout.fingerprints(k, s, p))) for s, p, _ in pieces]


def read_fingerprints(url: str, layout: Layout, k: int, pieces: list[tuple[int, str, int]], row: str, storage,
                      blocks: int):
    """Pass ``k``'s fingerprint objects as one Ray dataset, read by Ray tasks straight from the
    bucket (``ray_shuffle.RayShuffle.read_parquet`` for local files): ``pieces`` are (shard, piece,
    first row), the row numbers of a piece following the pieces before it."""
    import ray

    urls = fingerprint_urls(url, layout, k, pieces)
    ds = ray.data.from_items([{"path": u, "offset": o} for u, (_, _, o) in zip(urls, pieces, strict=True)],
                             override_num_blocks=max(1, min(len(urls), blocks)))
    return ds.map_batches(_read_remote_files, fn_args=(row, storage), batch_size=None, batch_format="pyarrow")


def _read_remote_files(batch, row: str, storage):
    """Ray task: fingerprint objects -> local copies in a scratch directory -> the local reader."""
    import pyarrow as pa

    from thresher.pipeline.executors.ray_shuffle import _read_files

    fs.configure(storage)
    urls = batch["path"].to_pylist()
    with tempfile.TemporaryDirectory(prefix="thresher-fp-") as tmp:
        local = [f"{tmp}/{i:06d}.parquet" for i in range(len(urls))]
        fsys, _ = fs.filesystem(urls[0], output=True)
        with fs.errors(urls[0], "output", OutputError):
            fsys.get([u.split("://", 1)[1] for u in urls], local)
        return _read_files(pa.table({"path": local, "offset": batch["offset"]}), row)


def pull_fingerprints(url: str, layout: Layout, k: int, pieces: list[tuple[int, str, int]]) -> None:
    """Driver: pass ``k``'s fingerprints into its own directory (a global op resolved in the driver)."""
    remote = RemoteOutput(url)
    names = [_rel(layout, layout.fingerprints(k, s, p)) for s, p, _ in pieces]
    layout.pass_dir(k).mkdir(parents=True, exist_ok=True)
    with remote._errors():
        remote.fs.get([remote.key(n) for n in names], [str(layout.out / n) for n in names])


def quarantine_names(url: str) -> list[str]:
    """The quarantine files a direct run's tasks wrote (``finish`` lists a local run's from its disk)."""
    return [f for f in RemoteOutput(url).list() if re.fullmatch(r"quarantine/pass\d+-[\w.]+\.jsonl", f)]


def unify_parts(url: str, files: list[str]) -> int:
    """``unify.unify_parquet_parts`` for parts in the bucket: each part's schema from its footer
    (ranged reads); a part that differs from the union is downloaded next to an empty file of the
    union's schema, rewritten there by ``unify_parquet_parts`` itself (so the two paths write the
    same bytes), and PUT whole under its own key (the new object replaces the old at once)."""
    import pyarrow.parquet as pq

    from thresher.pipeline.io.unify import target_schema, unify_parquet_parts

    remote = RemoteOutput(url)
    names = [f for f in files if f.endswith(".parquet")]
    if len(names) < 2:
        return 0

    def schema(name: str):
        with remote.fs.open(remote.key(name), "rb") as f:
            return pq.read_schema(f)

    with remote._errors(), ThreadPoolExecutor(_THREADS) as pool:
        schemas = list(pool.map(schema, names))
    same = all(s.equals(schemas[0], check_metadata=False) for s in schemas[1:])
    target = None if same else target_schema(schemas)  # None: nothing to do, or types that cannot be reconciled
    if target is None:
        return 0
    rewritten = 0
    with remote._errors(), tempfile.TemporaryDirectory(prefix="thresher-unify-") as tmp:
        pq.write_table(target.empty_table(), f"{tmp}/0-target.parquet")
        for name, s in zip(names, schemas, strict=True):
            if s.equals(target, check_metadata=False):
                continue
            remote.fs.get_file(remote.key(name), f"{tmp}/1-part.parquet")
            unify_parquet_parts(tmp, ["0-target.parquet", "1-part.parquet"])
            remote.fs.put_file(f"{tmp}/1-part.parquet", remote.key(name))
            rewritten += 1
    return rewritten


# --------------------------------------------------------------------------- direct: a task
class TaskWork:
    """A Ray task's scratch directory for a direct run: what its shards read downloaded from
    ``_work/`` (the previous pass's decisions — only its shards' rows, found by row-group
    statistics — state and rows), the shards run there as on a local disk (``dir`` is their output
    directory), then ``commit``: every file written uploaded under its final key, then the done
    markers. The directory is removed when the task ends, however it ends."""

    def __init__(self, recipe, url: str, k: int, shards: list[int]):
        self.storage, self.url, self.k, self.shards = getattr(recipe, "storage", None), url, k, shards
        self.dir: Path | None = None
        self.pulled: set[str] = set()

    def __enter__(self) -> TaskWork:
        fs.configure(self.storage)  # the driver's endpoint and identity, whatever this node's environment
        self.remote = RemoteOutput(self.url)
        self.dir = Path(tempfile.mkdtemp(prefix="thresher-task-"))
        self.layout = Layout(self.dir)
        self.layout.pass_dir(self.k).mkdir(parents=True)
        try:
            if self.k:
                self._pull()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _pull(self) -> None:
        from thresher.pipeline.columns import SHARD

        layout, remote, k = self.layout, self.remote, self.k - 1
        layout.pass_dir(k).mkdir(parents=True, exist_ok=True)
        names = []
        with remote._errors():
            base = remote.key(_rel(layout, layout.pass_dir(k)))
            remote.fs.invalidate_cache(base)
            for s in self.shards:
                names += [p[len(self.remote.root) + 1:] for p in _find(remote.fs, base, f"rows-{s:05d}.arrow.")]
            state = _rel(layout, layout.state(k))
            if remote.fs.exists(remote.key(state)):
                names.append(state)
            if names:
                remote.fs.get([remote.key(n) for n in names], [str(layout.out / n) for n in names])
            self._pull_decisions(SHARD)
        self.pulled = {*names, _rel(layout, layout.decisions(k))}

    def _pull_decisions(self, shard_col: str) -> None:
        """This task's shards' rows of the decisions (sorted by shard: row groups of other shards
        are skipped by their statistics, not downloaded)."""
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        path = self.layout.decisions(self.k - 1)
        table = pq.read_table(self.remote.key(_rel(self.layout, path)),
                              filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(self.remote.fs)),
                              filters=[(shard_col, "in", list(self.shards))])
        pq.write_table(table, path)

    def commit(self, markers: list[str]) -> None:
        """Upload every file the shards wrote (each object whole), then their done markers."""
        files = [f for f in outdir.list_files(self.dir) if f not in self.pulled and not f.endswith(TMP_SUFFIX)]
        self.remote.put(self.layout, files)
        crash_point("task-before-marker")
        done = {}
        for m in markers:
            shard = json.loads(m)["shard"]
            done[self.remote.key(_rel(self.layout, self.layout.done(self.k, shard)))] = m.encode()
        with self.remote._errors():
            self.remote.fs.pipe(done)

    def __exit__(self, *exc) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def _find(fsys, base: str, prefix: str) -> list[str]:
    """Objects under ``base`` whose names start with ``prefix``, listed by prefix where the store
    can (s3fs, gcsfs, adlfs: one request for the shard, not a listing of the whole pass)."""
    try:
        found = fsys.find(base, prefix=prefix)
    except TypeError:
        found = fsys.glob(f"{base}/{prefix}*")
    return sorted(p for p in found if p.rsplit("/", 1)[-1].startswith(prefix))


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
