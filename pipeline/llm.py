"""One client for OpenAI-compatible chat-completion servers (vLLM, SGLang, Ollama, hosted APIs).

- bounded concurrency (at most ``concurrency`` requests in flight per call, over as many kept-alive
  connections; the requests run on the client's own event loop thread, so it works the same in
  local workers and Ray actors). The HTTP layer is aiohttp (installed with Ray): its pool costs
  ~0.3 ms of CPU per request where httpx's grew with the pool (~8 ms at 32-64 in flight, under a
  fifth of the C / latency ceiling; bench/llm_throughput.py),
- retries with exponential backoff and jitter on 429, 5xx, timeouts, dropped connections and
  malformed or undecodable answers, honouring ``Retry-After``,
- a deadline per attempt (``timeout_s`` bounds connecting, sending, waiting and reading together:
  a server trickling bytes cannot hold a request open), the ``seed`` where the server supports one,
- an on-disk cache keyed by the endpoint and the whole request (model, messages, sampling
  parameters, response format), so a resumed or repeated run never pays twice; files are written
  atomically, so workers can share it. A call looks every request up first and sends only the
  misses (a request repeated within the call once), so replaying a cached run costs file reads
  alone. Each entry records the run that paid for it, so a resumed run still counts what it paid
  before it was interrupted,
- token usage and cost, which ops record in the ledger,
- errors that stop the run instead of quarantining every row (``FatalOpError``): a server that
  rejects the key, or one that cannot be reached before any request ever got an answer.

The API key is read from the environment variable the config names (never from a recipe), and
every error string the client produces goes through ``redact``: error bodies that echo the key
must not reach quarantine files, ledgers or logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, model_validator

from thresher.pipeline.assets import cache_dir
from thresher.pipeline.errors import FatalOpError, ThresherError
from thresher.pipeline.ops import typed_env_values

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
AUTH_STATUS = {401, 403}
ERROR_BODY_CHARS = 200  # of an error answer's body, kept in the row's quarantine reason

# --------------------------------------------------------------------------------------- redaction
REDACTED = "[redacted]"
_SECRET_PATTERNS = (
    # Authorization: Bearer <token>
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), rf"\g<1>{REDACTED}"),
    # OpenAI-style keys (sk-..., sk-proj-..., sk-ant-...); 8+ characters so "sk-learn" stays
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"), f"sk-{REDACTED}"),
    # credentials in URL query strings
    (re.compile(r"(?i)([?&;](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|secret|client[_-]?secret|"
                r"password|sig|signature)=)[^&#\s\"'<>]+"), rf"\g<1>{REDACTED}"),
    # user:password@ in URLs
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)[^@/\s]+@"), rf"\g<1>{REDACTED}@"),
    # "api_key": "...", x-api-key: ... (JSON bodies and headers echoed back)
    (re.compile(r"(?i)([\"']?\b(?:api[_-]?key|x-api-key|access[_-]?token|client[_-]?secret)[\"']?\s*[:=]\s*[\"']?)"
                r"[^\s\"',}&]+"), rf"\g<1>{REDACTED}"),
)
MIN_SECRET_CHARS = 4  # a shorter "key" (placeholders like "no") would mangle ordinary words and protects nothing


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without credentials: each of ``secrets`` (the configured key's value, also URL-
    encoded), ``Bearer`` tokens, ``sk-...`` keys, credential query parameters and passwords in URLs,
    and ``api_key``-style fields. Every error string of the client goes through here, because
    servers echo the request (key included) in error bodies that end up in quarantine and ledgers."""
    for s in secrets:
        if s and len(s) >= MIN_SECRET_CHARS:
            for form in {s, quote(s, safe="")}:
                text = text.replace(form, REDACTED)
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class LLMConfig(BaseModel):
    """The ``llm:`` block of an op's parameters; strict like ``OpParams`` (``max_tokens: true`` is an
    error, not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _typed_env_values(cls, data):
        return typed_env_values(cls, data)

    base_url: str = Field("${THRESHER_LLM_BASE_URL:-http://127.0.0.1:8000/v1}",
                          description="OpenAI-compatible API root (…/v1); ${VAR} is read from the environment")
    model: str = Field("default", description="model name the server knows")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the API key (unset: no key)")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy)")
    max_tokens: int = Field(512, ge=1, description="longest answer, in tokens")
    seed: int | None = Field(0, description="sampling seed sent to servers that support one")
    json_mode: bool = Field(False, description="ask for a JSON object (response_format)")
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight per worker")
    timeout_s: float = Field(60.0, gt=0, description="deadline of one attempt (connect, send, wait and read together)")
    max_retries: int = Field(5, ge=0, description="retries on 429, 5xx, timeouts, lost connections, malformed answers")
    backoff_s: float = Field(0.5, ge=0, description="first retry wait; doubles each time, with jitter")
    backoff_max_s: float = Field(30.0, gt=0, description="longest wait between retries")
    cache: bool = Field(True, description="cache answers on disk by endpoint and request")
    cache_dir: str | None = Field(None, description="default: $THRESHER_CACHE/llm")
    usd_per_million_input: float = Field(0.0, ge=0, description="price of prompt tokens, for the ledger's cost")
    usd_per_million_output: float = Field(0.0, ge=0, description="price of output tokens")


@dataclass
class Completion:
    text: str | None  # None when the request failed
    error: str | None = None  # why it failed (redacted)
    cached: bool = False  # answered from the cache, paid by another run (no spend)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0
    failed: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, c: Completion) -> None:
        with self._lock:
            self.requests += 1
            self.cached += c.cached
            self.failed += c.text is None
            self.retries += c.retries
            if not c.cached:
                self.prompt_tokens += c.prompt_tokens
                self.completion_tokens += c.completion_tokens


class LiveCounters:
    """This process's LLM requests so far, all clients together, for live progress: done (cache
    hits included, as the ledger counts them), failed, spend in micro-dollars (what the ledger's
    ``llm_cost_micro_usd`` adds up to) and in flight now. Never reset: a reader keeps a baseline."""

    def __init__(self):
        self._lock = threading.Lock()
        self.done = self.failed = self.in_flight = 0
        self.spend_micro_usd = 0.0

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1

    def end(self, c: Completion | None, cfg: LLMConfig) -> None:
        """A request ended: ``c`` its completion, or None when it was cancelled or stopped the run."""
        with self._lock:
            self.in_flight -= 1
            if c is None:
                return
            self.done += 1
            self.failed += c.text is None
            if not c.cached:
                self.spend_micro_usd += (c.prompt_tokens * cfg.usd_per_million_input
                                         + c.completion_tokens * cfg.usd_per_million_output)

    def snapshot(self) -> tuple[int, int, float, int]:
        """(done, failed, spend in micro-dollars, in flight)."""
        with self._lock:
            return self.done, self.failed, self.spend_micro_usd, self.in_flight


LIVE = LiveCounters()


class _Retry(Exception):
    """One attempt failed in a way worth retrying: ``reason`` for the row, ``wait`` from Retry-After."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason, self.wait = reason, wait


class ChatClient:
    """``run_id``: the run this client spends for (kept by ``--resume``), ``attempt_id``: this
    invocation of it; cache entries record both, so that answers this run paid for in an earlier,
    interrupted attempt count as its spend when read back."""

    def __init__(self, cfg: LLMConfig, run_id: str = "", attempt_id: str = ""):
        self.cfg = cfg
        self.run_id = run_id
        self.attempt_id = attempt_id
        from thresher.pipeline.recipe import interpolate  # the recipe's own ${VAR:-default} rules

        self.base_url = interpolate(cfg.base_url, "llm", "base_url").rstrip("/")
        self._key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if not self.base_url.startswith(("http://", "https://")):
            raise ThresherError(f"llm.base_url '{self.redact(self.base_url)}' is not an http(s) URL")
        self._headers = {"Content-Type": "application/json"}
        if self._key:
            self._headers["Authorization"] = f"Bearer {self._key}"
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir("llm")
        self.usage = Usage()
        self._http = None  # aiohttp.ClientSession, made on the loop on first use
        self._dirs: set[Path] = set()  # cache folders known to exist
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closer: weakref.finalize | None = None  # stops the loop, closes the pool (close(), GC or exit)
        self._sessions: list = []  # the pool, where the closer finds it
        self._start_lock = threading.Lock()
        self._reached = False  # some request of this client got an HTTP answer: the server exists

    def redact(self, text: str) -> str:
        return redact(text, (self._key,))

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
        self._loop = self._closer = self._http = None
        self._sessions = []

    def _run(self, coro):
        """Run ``coro`` on this client's event loop (a daemon thread, started on first use) and wait.
        asyncio because a deadline there cancels the whole attempt, whatever phase it is in."""
        with self._start_lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._loop.run_forever, name="thresher-llm", daemon=True)
                thread.start()
                self._closer = weakref.finalize(self, _shut_down, self._loop, thread, self._sessions)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # ------------------------------------------------------------------ requests
    def body(self, messages: list[dict], **overrides) -> dict:
        c = self.cfg
        body = {"model": c.model, "messages": messages, "temperature": overrides.get("temperature", c.temperature),
                "max_tokens": overrides.get("max_tokens", c.max_tokens)}
        seed = overrides.get("seed", c.seed)
        if seed is not None:
            body["seed"] = seed
        if overrides.get("json_mode", c.json_mode):
            body["response_format"] = {"type": "json_object"}
        return body

    def cache_key(self, body: dict) -> str:
        """The endpoint and the whole request body (model, messages, every sampling parameter, the
        response format): another server with the same model name is another model."""
        return hashlib.sha256(json.dumps({"endpoint": self.base_url, "body": body}, sort_keys=True,
                                         ensure_ascii=False).encode()).hexdigest()

    def complete_many(self, requests: list[dict]) -> list[Completion]:
        """Request bodies (from ``body``) -> completions, in order; at most ``concurrency`` in flight.
        A ``FatalOpError`` (key rejected, server unreachable) stops the others: nothing more is sent."""
        if not requests:
            return []
        return self._run(self._complete_all(requests))

    def complete(self, body: dict) -> Completion:
        return self._run(self._complete(body))

    async def _complete_all(self, bodies: list[dict]) -> list[Completion]:
        """Cache hits first, in one pass without a task each; then the misses, ``concurrency`` at a time."""
        out: list[Completion | None] = [None] * len(bodies)
        keys = [self.cache_key(b) for b in bodies] if self.cfg.cache else [None] * len(bodies)
        if self.cfg.cache:
            for i, key in enumerate(keys):
                hit = self._cache_get(key)
                if hit is not None:
                    LIVE.begin()
                    out[i] = c = self._from_cache(hit)
                    self.usage.add(c)
                    LIVE.end(c, self.cfg)
        first: dict[str, int] = {}  # with the cache on, a request repeated within the call is sent once
        repeats = [(i, first.setdefault(k, i)) for i, k in enumerate(keys) if out[i] is None and k is not None]
        repeats = [(i, j) for i, j in repeats if i != j]
        again = {i for i, _ in repeats}
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def one(i: int) -> None:
            async with sem:
                out[i] = await self._complete(bodies[i], keys[i], lookup=False)

        tasks = [asyncio.ensure_future(one(i)) for i, c in enumerate(out) if c is None and i not in again]
        if tasks:
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:  # after an error, cancel what is waiting or in flight, and let it clean up
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()
        for i, j in repeats:  # as a cache hit on what this call just paid for: no spend
            done = out[j]
            out[i] = c = Completion(done.text, done.error, cached=done.text is not None,
                                    prompt_tokens=done.prompt_tokens, completion_tokens=done.completion_tokens)
            LIVE.begin()
            self.usage.add(c)
            LIVE.end(c, self.cfg)
        return out

    async def _complete(self, body: dict, key: str | None = None, lookup: bool = True) -> Completion:
        LIVE.begin()
        c = None
        try:
            c = await self._complete_counted(body, key, lookup)
            return c
        finally:
            LIVE.end(c, self.cfg)

    async def _complete_counted(self, body: dict, key: str | None, lookup: bool) -> Completion:
        if self.cfg.cache and key is None:
            key = self.cache_key(body)
        if self.cfg.cache and lookup:
            hit = self._cache_get(key)
            if hit is not None:
                c = self._from_cache(hit)
                self.usage.add(c)
                return c
        c = await self._post(body)
        if c.text is not None and self.cfg.cache:
            self._cache_put(key, {"text": c.text, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                                  "retries": c.retries, "run_id": self.run_id, "attempt_id": self.attempt_id})
        self.usage.add(c)
        return c

    def _from_cache(self, hit: dict) -> Completion:
        """An entry this run paid for in an earlier attempt counts as this run's spend (tokens, cost,
        its retries): it was paid before an interruption, in a batch whose ledger was lost (a batch
        that finished is not run again), and ``--resume`` keeps the run id, so the ledger of a resumed
        run equals an uninterrupted one. An entry paid in this attempt (a repeated request) or by
        another run is a free cache hit."""
        own = (bool(self.run_id) and hit.get("run_id") == self.run_id
               and hit.get("attempt_id", "") != self.attempt_id)
        return Completion(hit["text"], cached=not own, prompt_tokens=int(hit.get("prompt_tokens") or 0),
                          completion_tokens=int(hit.get("completion_tokens") or 0),
                          retries=int(hit.get("retries") or 0) if own else 0)

    async def _post(self, body: dict) -> Completion:
        if self._http is None:
            self._http = self._session()
            self._sessions.append(self._http)
        last = "no attempt"
        for attempt in range(self.cfg.max_retries + 1):
            try:
                c = await self._attempt(body)
                c.retries = attempt
                return c
            except _Retry as r:
                last, wait = r.reason, r.wait
            if attempt < self.cfg.max_retries:
                log.debug("LLM request to %s failed (%s); retrying", self.redact(self.base_url), self.redact(last))
                await asyncio.sleep(wait if wait is not None else self._backoff(attempt))
        return Completion(None, self.redact(f"gave up after {self.cfg.max_retries + 1} attempts: {last}"),
                          retries=self.cfg.max_retries)

    def _session(self):
        """The connection pool: one kept-alive connection per request in flight. A trace marks each
        request's ``connected`` once it has a connection (new or reused), so a deadline that passes
        before then reads as an unreachable server."""
        import aiohttp

        async def connected(session, ctx, params) -> None:
            ctx.trace_request_ctx["connected"] = True

        trace = aiohttp.TraceConfig()
        trace.on_connection_create_end.append(connected)
        trace.on_connection_reuseconn.append(connected)
        return aiohttp.ClientSession(
            headers=self._headers, trace_configs=[trace], timeout=aiohttp.ClientTimeout(total=None),
            connector=aiohttp.TCPConnector(limit=self.cfg.concurrency, limit_per_host=0, ttl_dns_cache=300))

    async def _exchange(self, url: str, data: bytes, state: dict) -> tuple[int, object, bytes]:
        async with self._http.post(url, data=data, trace_request_ctx=state) as r:
            return r.status, r.headers, await r.read()

    async def _attempt(self, body: dict) -> Completion:
        """One request within ``timeout_s`` (connect, send, wait and read together): the answer, a
        non-retryable failure (a Completion without text), ``_Retry``, or ``FatalOpError``."""
        import aiohttp

        state = {"connected": False}
        url = f"{self.base_url}/chat/completions"
        data = json.dumps(body, ensure_ascii=False).encode()
        try:
            status, headers, raw = await asyncio.wait_for(self._exchange(url, data, state), self.cfg.timeout_s)
        except asyncio.TimeoutError:
            if not state["connected"]:
                self._unreachable(f"no connection within {self.cfg.timeout_s:g} s")
            raise _Retry(f"timeout after {self.cfg.timeout_s:g} s") from None
        except aiohttp.ClientConnectorError as e:  # refused, no route, unknown host
            self._unreachable(f"ConnectError: {e}")
            raise _Retry(f"connection error (ConnectError: {e})") from None
        except aiohttp.ClientPayloadError as e:  # e.g. Content-Encoding: gzip over a corrupt body
            self._reached = True
            raise _Retry(f"undecodable response ({e})") from None
        except aiohttp.ClientError as e:  # dropped connections, malformed HTTP
            raise _Retry(f"connection error ({type(e).__name__}: {e})") from None
        self._reached = True
        text = raw.decode("utf-8", errors="replace")
        if status in AUTH_STATUS:
            self._fail(self._rejected(status, text))
        if status in RETRY_STATUS:
            raise _Retry(f"HTTP {status}", _retry_after(headers.get("retry-after")))
        if status >= 400:  # redact the whole body before cutting it: a cut key escapes the patterns
            return Completion(None, self.redact(f"HTTP {status}: {' '.join(text.split())}")[:ERROR_BODY_CHARS + 10])
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not text")
            usage = data.get("usage") or {}
            return Completion(text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                              completion_tokens=int(usage.get("completion_tokens") or 0))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            raise _Retry(f"malformed response ({type(e).__name__}: {e})") from None

    def _fail(self, message: str) -> None:
        """The run cannot go on: every row would fail the same way. ``complete_many`` cancels the
        call's other requests; the runner stops the run."""
        raise FatalOpError(self.redact(message))

    def _unreachable(self, why: str) -> None:
        """A connection failure before the server ever answered means a wrong URL or a server that
        is down, not a bad row: stop now rather than quarantine every row after its retries."""
        if not self._reached:
            self._fail(f"cannot reach the LLM server at {self.base_url}: {why}. Check llm.base_url "
                       "(or THRESHER_LLM_BASE_URL) and that the server is running")

    def _rejected(self, status: int, text: str) -> str:
        env = self.cfg.api_key_env
        detail = " ".join(text.split())
        detail = f": {self.redact(detail)[:ERROR_BODY_CHARS]}" if detail else ""
        if not env:
            fix = "set llm.api_key_env to the environment variable that holds its key"
        elif not self._key:
            fix = f"no key was sent: set {env} in the environment"
        else:
            fix = f"set {env} in the environment to a key it accepts"
        return f"the LLM server at {self.base_url} rejected the request (HTTP {status}{detail}); {fix}"

    def _backoff(self, attempt: int) -> float:
        base = min(self.cfg.backoff_max_s, self.cfg.backoff_s * (2 ** attempt))
        return base * (0.5 + random.random() / 2)  # jitter: spread retries of concurrent requests

    # ------------------------------------------------------------------ cache
    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> dict | None:
        p = self._cache_path(key)
        try:
            hit = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return hit if isinstance(hit, dict) and isinstance(hit.get("text"), str) else None

    def _cache_put(self, key: str, value: dict) -> None:
        p = self._cache_path(key)
        if p.parent not in self._dirs:
            p.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(p.parent)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, p)

    def cost_usd(self) -> float:
        u = self.usage
        return (u.prompt_tokens * self.cfg.usd_per_million_input + u.completion_tokens * self.cfg.usd_per_million_output) / 1e6

    def take_counters(self) -> dict[str, int]:
        """Usage since the last call, as ledger counters (cost in micro-dollars)."""
        u = self.usage
        out = {"llm_requests": u.requests, "llm_cached": u.cached, "llm_failed": u.failed, "llm_retries": u.retries,
               "llm_prompt_tokens": u.prompt_tokens, "llm_completion_tokens": u.completion_tokens,
               "llm_cost_micro_usd": round(self.cost_usd() * 1e6)}
        self.usage = Usage()
        return out


def _shut_down(loop: asyncio.AbstractEventLoop, thread: threading.Thread, sessions: list) -> None:
    """Close a client's connection pool and stop its loop (at ``close()``, when it is collected, or
    at exit: a pool left open is reported by aiohttp)."""
    if loop.is_closed() or not thread.is_alive() or threading.current_thread() is thread:
        return
    for session in sessions:
        asyncio.run_coroutine_threadsafe(session.close(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(60.0, max(0.0, float(value)))
    except ValueError:
        return None
