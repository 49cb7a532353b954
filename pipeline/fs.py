"""Object stores and the Hugging Face Hub as inputs and outputs: ``s3://`` (AWS, MinIO, R2 and
other S3-compatible endpoints), ``gs://``, ``az://``/``abfs://`` and ``hf://datasets/...``.

Why fsspec and not ``pyarrow.fs``: one API covers every store the issue names (s3fs, gcsfs, adlfs,
and huggingface_hub's ``HfFileSystem``, which exists only as an fsspec filesystem), with the same
glob and directory listing for each. fsspec files are seekable and read lazily in ranged requests
(``block_size`` bytes at a time), so a reader streams a big object and a shard reads only its byte
range; pyarrow wraps them (``pa.PythonFile``) where it wants a native file (Parquet footers and row
groups are fetched by range). Local paths never come here: they keep the builtin ``open`` and
``pa.OSFile`` (``is_url`` is false), so the local fast path is unchanged.

Credentials come from each library's own provider chain (environment variables, shared config
files, instance / pod identity), never from a recipe: a recipe may only say where the store is
(``storage_options: {endpoint_url: ..., region: ...}`` under ``input`` or ``output``). The S3
endpoint is read as the AWS SDKs read it: ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``.
The driver's storage environment travels to the workers inside the pickled recipe (``Storage``,
whose ``repr`` shows no secret), so tasks on a Ray that was started before the variables were set
still reach the same endpoint with the same credentials. Messages name a URL only through
``redact`` (no user info, no signed query strings).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from thresher.pipeline.errors import ThresherError

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "abfs", "abfs": "abfs", "abfss": "abfs",
           "hf": "hf"}
_PACKAGE = {"s3": "s3fs", "gcs": "gcsfs", "abfs": "adlfs", "hf": "huggingface_hub"}
# environment the storage libraries read: forwarded to the workers with the recipe (see module doc)
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
                 "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_CONNECTION_STRING",
                 "AZURE_STORAGE_ACCOUNT_KEY", "HF_TOKEN", "HF_ENDPOINT",
                 "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CLIENT_ID",
                 "AZURE_STORAGE_CLIENT_SECRET", "AZURE_STORAGE_TENANT_ID")
# recipe storage_options that would be credentials: refused (they belong to the environment)
SECRET_OPTION = re.compile(r"(key|secret|token|password|passwd|credential|sas|signature|connection_string)", re.I)
BLOCK_SIZE = 8 << 20  # bytes per ranged read of a remote file
# gcsfs logs each request it gives up on with ``logger.exception``; with no handler configured,
# Python's last-resort handler would print that traceback under thresher's one-line error. A
# NullHandler (the logging HOWTO's advice for libraries) keeps it for applications that configure logging.
logging.getLogger("gcsfs").addHandler(logging.NullHandler())


def is_url(path: str) -> bool:
    """A path with a scheme thresher reads through fsspec (``file://`` and plain paths are local)."""
    m = _URL.match(str(path))
    return bool(m) and m.group(1).lower() != "file"


def protocol(url: str) -> str:
    scheme = _URL.match(url).group(1).lower()
    if scheme not in SCHEMES:
        raise ThresherError(f"'{redact(url)}': unsupported storage scheme '{scheme}://' "
                            f"(supported: {', '.join(sorted(SCHEMES))}://)")
    return SCHEMES[scheme]


def redact(text: str) -> str:
    """``text`` with the user info of URLs (``s3://KEY:SECRET@bucket``) and signed query strings
    (``?X-Amz-Signature=...``, ``sig=``, ``token=``) blanked out."""
    text = re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@", r"\1***@", str(text))
    text = re.sub(r"(?i)([?&](?:x-amz-[a-z-]+|sig|signature|token|sv|se|sp|key|access_token)=)[^&\s'\"]+",
                  r"\1***", text)
    # Azure connection strings (``AccountKey=...;SharedAccessSignature=...``)
    return re.sub(r"(?i)\b(AccountKey|SharedAccessSignature)=[^;\s'\"]+", r"\1=***", text)


@dataclass
class Storage:
    """Where the stores are and the environment the driver reads them with; travels to workers."""

    input_options: dict[str, Any] = field(default_factory=dict)
    output_options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict, repr=False)  # never shown: may hold credentials
    # a Ray run's object-store output, which its tasks write to directly (``objectstore.TaskWork``);
    # "" when the output is local or staged (docs/storage.md)
    direct_output: str = ""

    @classmethod
    def from_recipe(cls, recipe) -> Storage:
        import os

        return cls(dict(getattr(recipe.input, "storage_options", None) or {}),
                   dict(getattr(recipe.output, "storage_options", None) or {}),
                   {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)})

    def key(self) -> str:
        return hashlib.sha256(repr((sorted(self.input_options.items()), sorted(self.output_options.items()),
                                    sorted(self.env.items()))).encode()).hexdigest()


_current = Storage()


def configure(storage: Storage | None) -> None:
    """Use ``storage`` (the recipe's options and the driver's environment) in this process."""
    global _current
    if storage is not None and storage.key() != _current.key():
        _current = storage


def _s3_options(opts: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    endpoint = opts.get("endpoint_url") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        out["endpoint_url"] = endpoint
    region = opts.get("region") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        out["client_kwargs"] = {"region_name": region}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        out.update(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"])
        if env.get("AWS_SESSION_TOKEN"):
            out["token"] = env["AWS_SESSION_TOKEN"]
    elif env.get("AWS_PROFILE"):
        out["profile"] = env["AWS_PROFILE"]
    for k in ("anon", "requester_pays"):
        if k in opts:
            out[k] = opts[k]
    return out


def _gcs_options(opts: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """gcsfs's options. The endpoint is ``storage_options.endpoint_url`` or ``STORAGE_EMULATOR_HOST``
    (``host:port`` or a URL, as gcsfs and Google's client libraries read it: ``gcsfs.core._location``,
    ``google.cloud.storage.Client``); against an emulator, with no key file named, requests are
    anonymous, as those libraries send them. With ``GOOGLE_APPLICATION_CREDENTIALS`` set the
    credentials are Application Default Credentials, asked for by name (``token="google_default"``)
    so that a key that cannot be loaded is an error, not gcsfs's silent fall back to anonymous access."""
    import os

    out = {k: v for k, v in opts.items() if k != "region"}
    emulator = env.get("STORAGE_EMULATOR_HOST", "")
    emulator = "" if emulator == "default" else emulator
    if emulator and "endpoint_url" not in out:
        out["endpoint_url"] = emulator if emulator.startswith(("http://", "https://")) else f"http://{emulator}"
    key_file = env.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key_file:  # ADC reads the variable here; a worker started without it gets the driver's file
        out["token"] = "google_default" if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") == key_file else key_file
    elif emulator:
        out["token"] = "anon"
    if env.get("GOOGLE_CLOUD_PROJECT") and "project" not in out:
        out["project"] = env["GOOGLE_CLOUD_PROJECT"]
    return out


def _gcs_class(kwargs: dict[str, Any]):
    """gcsfs's JSON-API filesystem for an emulator or another endpoint: gcsfs's default class
    (``ExtendedGcsFileSystem``) first asks Google's gRPC storage-control service for each bucket's
    layout, which such an endpoint does not serve (a failed lookup per call, and a warning)."""
    if not kwargs.get("endpoint_url"):
        return None
    from gcsfs.core import GCSFileSystem

    return GCSFileSystem


_AZURE_ENV = {"AZURE_STORAGE_CONNECTION_STRING": "connection_string", "AZURE_STORAGE_ACCOUNT_NAME": "account_name",
              "AZURE_STORAGE_ACCOUNT_KEY": "account_key", "AZURE_STORAGE_SAS_TOKEN": "sas_token",
              "AZURE_STORAGE_CLIENT_ID": "client_id", "AZURE_STORAGE_CLIENT_SECRET": "client_secret",
              "AZURE_STORAGE_TENANT_ID": "tenant_id"}


def _azure_options(opts: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """adlfs's options, from the variables adlfs reads itself (``adlfs.spec.AzureBlobFileSystem``:
    ``AZURE_STORAGE_CONNECTION_STRING``, ``..._ACCOUNT_NAME`` / ``..._ACCOUNT_KEY``, ``..._SAS_TOKEN``,
    a service principal's ``..._CLIENT_ID`` / ``..._CLIENT_SECRET`` / ``..._TENANT_ID``), passed
    explicitly so a worker uses the driver's. A connection string also names the endpoint
    (``BlobEndpoint=``: Azurite, sovereign clouds); the recipe may name ``account_name`` or
    ``account_host``."""
    out = {k: v for k, v in opts.items() if k != "region"}
    for var, kw in _AZURE_ENV.items():
        if env.get(var) and kw not in out:
            out[kw] = env[var]
    return out


def filesystem(url: str, output: bool = False):
    """(fsspec filesystem, path inside it) for ``url``, with the recipe's options and the driver's
    environment. Instances are cached by fsspec per set of options."""
    import fsspec

    proto = protocol(url)
    opts = _current.output_options if output else _current.input_options
    env = _current.env or {}
    if proto == "s3":
        kwargs = _s3_options(opts, env)
    elif proto == "gcs":
        kwargs = _gcs_options(opts, env)
    elif proto == "abfs":
        kwargs = _azure_options(opts, env)
    else:
        kwargs = {k: v for k, v in opts.items() if k != "region"}
        if proto == "hf" and env.get("HF_ENDPOINT") and "endpoint" not in kwargs:
            kwargs["endpoint"] = env["HF_ENDPOINT"]
        if proto == "hf" and env.get("HF_TOKEN"):
            kwargs["token"] = env["HF_TOKEN"]
    try:
        cls = _gcs_class(kwargs) if proto == "gcs" else None
        fs = cls(**kwargs) if cls else fsspec.filesystem(proto, **kwargs)
    except ImportError:
        raise ThresherError(f"'{redact(url)}' needs the {_PACKAGE[proto]} package: pip install {_PACKAGE[proto]}") from None
    except Exception as e:  # noqa: BLE001 - a client that checks its credentials when made (gcsfs, adlfs)
        raise storage_error(url, e, "output" if output else "input") from None
    scheme = _URL.match(url).group(1)
    return fs, url[len(scheme) + 3:]


def direct_output(recipe) -> str:
    """The object-store URL a run's tasks write their parts to directly ("" when they write to a
    local directory: a local output, or one staged on the driver's machine)."""
    storage = getattr(recipe, "storage", None)
    return getattr(storage, "direct_output", "") or ""


def join(url: str, rel: str) -> str:
    return url.rstrip("/") + "/" + rel.lstrip("/")


def _scheme(url: str) -> str:
    return _URL.match(url).group(1) + "://"


# --------------------------------------------------------------------------- errors
_HINTS = {  # (where credentials come from, where the endpoint is set) for each store's messages
    "gcs": ("GOOGLE_APPLICATION_CREDENTIALS or the node's service account",
            "STORAGE_EMULATOR_HOST / storage_options.endpoint_url"),
    "abfs": ("AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY, "
             "AZURE_STORAGE_SAS_TOKEN or a managed identity", "the connection string's BlobEndpoint"),
}


def _describe_gcs_azure(e: BaseException, proto: str) -> str | None:
    """gcsfs and adlfs failures by HTTP status (gcsfs's ``HttpError.code``, azure-core's
    ``HttpResponseError.status_code`` and ``error_code``) and google-auth's credential errors;
    None where the generic rules below apply."""
    creds, endpoint = _HINTS[proto]
    chain = [c for c in (e, e.__cause__, e.__context__) if c is not None]
    names = {type(c).__name__ for c in chain}
    status = next((s for c in chain for s in (getattr(c, "status_code", None), getattr(c, "code", None))
                   if isinstance(s, int)), None)
    code = str(getattr(e, "error_code", "") or "")
    text = f"{type(e).__name__}: {e}"
    if names & {"DefaultCredentialsError", "MalformedError"}:
        return f"the credentials could not be loaded (check {creds})"
    if status in (401, 403) or names & {"ClientAuthenticationError", "RefreshError"} \
            or code.startswith(("Authentication", "Authorization")) or text.startswith("OSError: Forbidden"):
        return f"access denied: the credentials were refused (check {creds})"
    if code == "ContainerNotFound":
        return "the container does not exist"
    if names & {"ServiceRequestError", "ClientConnectorError", "ConnectionRefusedError"}:
        return f"cannot connect to the storage endpoint (check {endpoint})"
    return None


def describe(e: BaseException, url: str = "") -> str:
    """One line for a storage failure, from the error codes of botocore / the HTTP status."""
    m = _URL.match(url)
    proto = SCHEMES.get(m.group(1).lower(), "") if m else ""
    if proto in _HINTS:
        said = _describe_gcs_azure(e, proto)
        if said:
            return said
    code = ""
    with contextlib.suppress(Exception):
        code = e.response["Error"]["Code"]  # botocore ClientError
    text = f"{type(e).__name__}: {e}"
    chain = [e, e.__cause__, e.__context__]
    names = " ".join(type(c).__name__ for c in chain if c is not None)
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "403") \
            or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text or isinstance(e, PermissionError):
        return ("access denied: the credentials were refused (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE or the node's role, and the endpoint)")
    if "NoCredentials" in names or "NoCredentials" in text or "Unable to locate credentials" in text:
        return "no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a node role)"
    if code == "NoSuchBucket" or "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return "the bucket does not exist"
    if isinstance(e, FileNotFoundError):
        return "does not exist"
    if "EndpointConnectionError" in names or "Could not connect" in text or "ConnectionRefused" in text \
            or isinstance(e, ConnectionError):
        return "cannot connect to the storage endpoint (check AWS_ENDPOINT_URL / storage_options.endpoint_url)"
    return redact(text.splitlines()[0] if text else type(e).__name__)[:300]


def storage_error(url: str, e: BaseException, what: str = "") -> ThresherError:
    return ThresherError(f"{what or 'storage'} '{redact(url)}': {describe(e, url)}")


@contextlib.contextmanager
def errors(url: str, what: str = "", cls: type[ThresherError] = ThresherError) -> Iterator[None]:
    """Failures of the storage library -> one line naming the (redacted) URL, without a traceback."""
    try:
        yield
    except ThresherError:
        raise
    except Exception as e:  # noqa: BLE001 - botocore, aiohttp, gcsfs... each has its own error types
        raise cls(str(storage_error(url, e, what))) from None


# --------------------------------------------------------------------------- reading
def open_input(path: str):
    """A binary file object for reading ``path``: the builtin ``open`` for a local path; for a URL
    a seekable fsspec file that fetches ``BLOCK_SIZE`` ranges as it is read (streaming)."""
    if not is_url(path):
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    fs, p = filesystem(path)
    with errors(path, "input file"):
        return fs.open(p, "rb", block_size=BLOCK_SIZE)


def native_input(path: str):
    """An Arrow input file over a remote object (ranged reads; for Parquet and Arrow's decoders)."""
    import pyarrow as pa

    return pa.PythonFile(open_input(path), mode="r")


def size(path: str) -> int:
    fs, p = filesystem(path)
    with errors(path, "input file"):
        return int(fs.size(p))


def expand(url: str, is_glob: bool) -> list[tuple[str, str]]:
    """(URL, name relative to the glob root or directory) of every file ``url`` names: a file, a
    directory (a finished thresher output: its ``data/``) or a glob; ``hf://`` URLs may select a
    ``config`` and ``split`` (see ``hf_selection``). Sorted; empty if nothing matches."""
    url, select = hf_selection(url) if protocol(url) == "hf" else (url, None)
    fs, p = filesystem(url)
    scheme = _scheme(url)
    with errors(url, "input path", _input_error()):
        fs.invalidate_cache()
        if is_glob:
            root = url_glob_root(p)
            found = [m for m in sorted(fs.glob(p)) if fs.isfile(m)]
            return _select([(scheme + m, _rel(m, root)) for m in found], select)
        if fs.isfile(p):
            return [(url, p.rstrip("/").rsplit("/", 1)[-1])]
        if not fs.isdir(p):
            return []
        base = p.rstrip("/")
        if fs.isfile(base + "/_SUCCESS"):
            base += "/data"
        files = sorted(fs.find(base))
        return _select([(scheme + f, _rel(f, base)) for f in files
                        if not f.rsplit("/", 1)[-1].startswith((".", "_"))], select)


def _input_error():
    from thresher.pipeline.errors import InputError

    return InputError


def _rel(path: str, root: str) -> str:
    root = root.rstrip("/")
    return path[len(root) + 1:] if root and path.startswith(root + "/") else path.rsplit("/", 1)[-1]


def url_glob_root(path: str) -> str:
    parts = []
    for part in path.split("/"):
        if any(c in part for c in "*?["):
            break
        parts.append(part)
    return "/".join(parts)


# --------------------------------------------------------------------------- Hugging Face
_HF = re.compile(r"^hf://(?P<kind>datasets|models|spaces)/(?P<repo>[^/@?#]+/[^/@?#]+)"
                 r"(?:@(?P<rev>refs/(?:convert|pr)/[^/?#]+|[^/?#]+))?"
                 r"(?P<path>/[^?#]*)?(?:\?(?P<query>[^#]*))?$")


def hf_selection(url: str) -> tuple[str, dict[str, str] | None]:
    """``hf://datasets/ORG/NAME[@REVISION][/PATH][?config=C&split=S]`` -> (the URL HfFileSystem
    reads, the selection). A revision is a branch, tag or commit (``@~parquet`` is the Hub's
    Parquet conversion ``refs/convert/parquet``, laid out ``CONFIG/SPLIT/*.parquet``; ``refs/pr/N``
    a pull request; another ``/`` in a branch name is written ``%2F``). ``config`` keeps files under a directory of that name; ``split`` keeps files in a
    ``SPLIT/`` directory or named ``SPLIT-*`` / ``SPLIT_*`` / ``SPLIT.*`` (the Hub's conventions)."""
    m = _HF.match(url.replace("@~parquet", "@refs/convert/parquet", 1))
    if not m:
        raise _input_error()(f"'{redact(url)}': expected hf://datasets/ORG/NAME[@REVISION][/PATH][?config=C&split=S]")
    select: dict[str, str] = {}
    for part in filter(None, (m.group("query") or "").split("&")):
        k, _, v = part.partition("=")
        if k not in ("config", "split") or not v:
            raise _input_error()(f"'{redact(url)}': unknown selection '{part}' (use config=NAME and split=NAME)")
        select[k] = v
    base = f"hf://{m.group('kind')}/{m.group('repo')}" + (f"@{m.group('rev')}" if m.group("rev") else "")
    return base + (m.group("path") or ""), (select or None)


def _select(files: list[tuple[str, str]], select: dict[str, str] | None) -> list[tuple[str, str]]:
    if not select:
        return files
    out = []
    for url, rel in files:
        parts = rel.split("/")
        dirs, name = parts[:-1], parts[-1]
        if "config" in select and select["config"] not in dirs:
            continue
        if "split" in select:
            s = select["split"]
            if s not in dirs and not re.match(rf"^{re.escape(s)}[-_.]", name):
                continue
        out.append((url, rel))
    return out


# --------------------------------------------------------------------------- output staging
def staging_dir(url: str):
    """The local directory where a run with an object-store output works (its ``_work/``, its lock,
    its parts before upload): ``$THRESHER_STAGING`` or ``$THRESHER_CACHE/staging``, one folder per
    output URL, so ``--resume`` finds it again."""
    import os
    from pathlib import Path

    from thresher.pipeline.assets import cache_dir

    root = Path(os.environ["THRESHER_STAGING"]) if os.environ.get("THRESHER_STAGING") else cache_dir("staging")
    return root / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:20]
