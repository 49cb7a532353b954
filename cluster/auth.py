"""Ray token authentication as thresher's cluster commands meet it.

Ray (>= 2.52, on by default from 2.60) protects the GCS and the dashboard with a token. A client
sends it only when ``RAY_AUTH_MODE=token`` (``ray.init``) or when it puts the ``Authorization``
header on a request itself (what ``thresher submit`` / ``jobs`` do). The token is found as Ray's own
loader finds it: ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH`` names, else
``~/.ray/auth_token``.

Connecting to a protected cluster without the token, ``ray.init`` retries for ~20 s and says only
"Failed to connect" (the reason goes to the C++ log); or, with the mode set and no token, raises
``AuthenticationError``. :func:`connect_error` turns either into the one line that says what to set,
asking the GCS itself whether it refused for want of a token (:func:`gcs_requires_token`).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from thresher.pipeline.errors import ThresherError

TOKEN_HELP = "`ray get-auth-token` on the head prints it"
WHERE = "RAY_AUTH_TOKEN (or a file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token)"


def default_token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


def find_token() -> tuple[str | None, str]:
    """The token and where it came from, in Ray's order; ``(None, "")`` when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token, "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            return Path(path).expanduser().read_text().strip() or None, path
        except OSError as e:
            raise ThresherError(f"RAY_AUTH_TOKEN_PATH '{path}' cannot be read: {e.strerror or e}") from None
    default = default_token_path()
    try:
        return default.read_text().strip() or None, "~/.ray/auth_token"
    except OSError:  # no file: no token
        return None, ""


def auth_headers() -> dict[str, str]:
    """The ``Authorization`` header for the dashboard (Jobs API), when a token is found."""
    token, _ = find_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def is_auth_error(e: BaseException) -> bool:
    return type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(e) or "Unauthenticated" in str(e)


def gcs_requires_token(address: str, timeout: float = 5.0) -> bool:
    """Whether the GCS at ``host:port`` refuses this process for want of a (valid) token. One
    request through Ray's own GCS client, in a thread given ``timeout`` seconds: an unreachable
    address, or any other answer, is False."""
    if "://" in address or ":" not in address:  # ray:// client addresses, "auto": not a GCS address
        return False
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 3.0)).close()
    except (OSError, ValueError):  # nothing listens there: not a question of tokens
        return False
    verdict: list[bool] = []

    def probe() -> None:
        try:
            from ray._raylet import GcsClient

            GcsClient(address=address).internal_kv_get(b"thresher-probe", namespace=None, timeout=2)
            verdict.append(False)
        except Exception as e:  # noqa: BLE001 - the kind of failure is the answer
            verdict.append(is_auth_error(e))

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(verdict and verdict[0])


def auth_message(address: str) -> str:
    """What to set to reach the token-protected cluster at ``address``, given this environment."""
    mode = os.environ.get("RAY_AUTH_MODE", "")
    try:
        token, where = find_token()
    except ThresherError as e:
        return f"the Ray cluster at {address} requires token authentication, and {e}"
    missing = []
    if mode.lower() != "token":
        missing.append(f"RAY_AUTH_MODE=token (it is {mode!r})" if mode else "RAY_AUTH_MODE=token")
    if not token:
        missing.append(f"the cluster's token in {WHERE}")
    if missing:
        return (f"the Ray cluster at {address} requires token authentication: set {' and '.join(missing)} "
                f"({TOKEN_HELP})")
    return (f"the Ray cluster at {address} rejected the token from {where}: set RAY_AUTH_TOKEN to the token the "
            f"head was started with ({TOKEN_HELP})")


def connect_error(address: str, e: BaseException) -> str:
    """The one-line error for a failed ``ray.init(address=...)``."""
    if is_auth_error(e) or gcs_requires_token(address):
        return auth_message(address)
    first = (str(e).splitlines() or [""])[0][:300]
    return f"cannot connect to the Ray cluster at {address}: {first}"
