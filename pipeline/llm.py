"""One client for OpenAI-compatible chat-completion servers (vLLM, SGLang, Ollama, hosted APIs).

- bounded concurrency (a thread pool per call; works the same in local workers and Ray actors),
- retries with exponential backoff and jitter on 429, 5xx, timeouts, dropped connections and
  malformed answers, honouring ``Retry-After``,
- a per-request timeout, the ``seed`` where the server supports one,
- an on-disk cache keyed by the request (model, messages, sampling parameters), so a resumed or
  repeated run never pays twice; files are written atomically, so workers can share it,
- token usage and cost, which ops record in the ledger.

The API key is read from the environment variable the config names (never from a recipe).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import ThresherError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMConfig(BaseModel):
    """The ``llm:`` block of an op's parameters."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("${THRESHER_LLM_BASE_URL:-http://127.0.0.1:8000/v1}",
                          description="OpenAI-compatible API root (…/v1); ${VAR} is read from the environment")
    model: str = Field("default", description="model name the server knows")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the API key (unset: no key)")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy)")
    max_tokens: int = Field(512, ge=1, description="longest answer, in tokens")
    seed: int | None = Field(0, description="sampling seed sent to servers that support one")
    json_mode: bool = Field(False, description="ask for a JSON object (response_format)")
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight per worker")
    timeout_s: float = Field(60.0, gt=0, description="per request")
    max_retries: int = Field(5, ge=0, description="retries on 429, 5xx, timeouts, lost connections, malformed answers")
    backoff_s: float = Field(0.5, ge=0, description="first retry wait; doubles each time, with jitter")
    backoff_max_s: float = Field(30.0, gt=0, description="longest wait between retries")
    cache: bool = Field(True, description="cache answers on disk by request")
    cache_dir: str | None = Field(None, description="default: $THRESHER_CACHE/llm")
    usd_per_million_input: float = Field(0.0, ge=0, description="price of prompt tokens, for the ledger's cost")
    usd_per_million_output: float = Field(0.0, ge=0, description="price of output tokens")


@dataclass
class Completion:
    text: str | None  # None when the request failed
    error: str | None = None
    cached: bool = False
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


class ChatClient:
    def __init__(self, cfg: LLMConfig):
        import httpx

        self.cfg = cfg
        from pipeline.recipe import interpolate  # the recipe's own ${VAR:-default} rules

        self.base_url = interpolate(cfg.base_url, "llm", "base_url").rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ThresherError(f"llm.base_url '{self.base_url}' is not an http(s) URL")
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(headers=headers, timeout=cfg.timeout_s,
                                  limits=httpx.Limits(max_connections=cfg.concurrency))
        root = cfg.cache_dir or os.path.join(os.environ.get("THRESHER_CACHE", os.path.expanduser("~/.cache/thresher")), "llm")
        self.cache_dir = Path(root)
        self.usage = Usage()

    def close(self) -> None:
        self._http.close()

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

    def complete_many(self, requests: list[dict]) -> list[Completion]:
        """Request bodies (from ``body``) -> completions, in order; at most ``concurrency`` in flight."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(requests))) as pool:
            out = list(pool.map(self.complete, requests))
        return out

    def complete(self, body: dict) -> Completion:
        key = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        if self.cfg.cache:
            hit = self._cache_get(key)
            if hit is not None:
                c = Completion(hit["text"], cached=True, prompt_tokens=hit.get("prompt_tokens", 0),
                               completion_tokens=hit.get("completion_tokens", 0))
                self.usage.add(c)
                return c
        c = self._post(body)
        if c.text is not None and self.cfg.cache:
            self._cache_put(key, {"text": c.text, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens})
        self.usage.add(c)
        return c

    def _post(self, body: dict) -> Completion:
        import httpx

        url = f"{self.base_url}/chat/completions"
        last = "no attempt"
        for attempt in range(self.cfg.max_retries + 1):
            wait = None
            try:
                r = self._http.post(url, json=body)
                if r.status_code in (401, 403):
                    raise ThresherError(f"the LLM server at {self.base_url} rejected the request ({r.status_code}); "
                                        f"set {self.cfg.api_key_env or 'the API key variable'} in the environment")
                if r.status_code in RETRY_STATUS:
                    last = f"HTTP {r.status_code}"
                    wait = _retry_after(r.headers.get("retry-after"))
                elif r.status_code >= 400:
                    return Completion(None, f"HTTP {r.status_code}: {r.text[:200]}", retries=attempt)
                else:
                    try:
                        data = r.json()
                        text = data["choices"][0]["message"]["content"]
                        if not isinstance(text, str):
                            raise TypeError("content is not text")
                        usage = data.get("usage") or {}
                        return Completion(text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                          completion_tokens=int(usage.get("completion_tokens") or 0), retries=attempt)
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        last = f"malformed response ({type(e).__name__}: {e})"
            except httpx.TimeoutException:
                last = f"timeout after {self.cfg.timeout_s:g} s"
            except httpx.TransportError as e:
                last = f"connection error ({type(e).__name__})"
            if attempt < self.cfg.max_retries:
                time.sleep(wait if wait is not None else self._backoff(attempt))
        return Completion(None, f"gave up after {self.cfg.max_retries + 1} attempts: {last}", retries=self.cfg.max_retries)

    def _backoff(self, attempt: int) -> float:
        base = min(self.cfg.backoff_max_s, self.cfg.backoff_s * (2 ** attempt))
        return base * (0.5 + random.random() / 2)  # jitter: spread retries of concurrent requests

    # ------------------------------------------------------------------ cache
    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> dict | None:
        p = self._cache_path(key)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _cache_put(self, key: str, value: dict) -> None:
        p = self._cache_path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
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


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(60.0, max(0.0, float(value)))
    except ValueError:
        return None
