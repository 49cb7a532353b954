"""The chat-completions client against a local test server that speaks the protocol (including
429s, 500s, slow and malformed responses). The faults of issue 12 (trickled answers, corrupt gzip,
echoed keys, rejected keys, unreachable servers, spend across --resume) are in test_llm_faults.py."""

from __future__ import annotations

import pytest

from tests.llm_test_server import ChatTestServer
from thresher.pipeline.errors import FatalOpError
from thresher.pipeline.llm import ChatClient, LLMConfig


def _client(server, tmp_path, **kw) -> ChatClient:
    cfg = LLMConfig(base_url=server.url, model="test", backoff_s=0.01, timeout_s=1.0, cache_dir=str(tmp_path / "cache"), **kw)
    return ChatClient(cfg)


def _ask(client, text):
    return client.body([{"role": "user", "content": text}])


def test_retries_through_every_kind_of_fault(tmp_path):
    with ChatTestServer(slow_s=2.0) as server:
        server.faults.extend(["429", "500", "slow", "malformed"])
        c = _client(server, tmp_path, max_retries=5)
        out = c.complete(_ask(c, "hello"))
        assert out.text == "reply to: hello" and out.retries == 4
        assert len(server.requests) == 5
        counters = c.take_counters()
        assert counters["llm_retries"] == 4 and counters["llm_requests"] == 1 and counters["llm_prompt_tokens"] == 1


def test_gives_up_with_the_reason(tmp_path):
    with ChatTestServer() as server:
        server.faults.extend(["500"] * 3)
        c = _client(server, tmp_path, max_retries=2)
        out = c.complete(_ask(c, "x"))
        assert out.text is None and "gave up after 3 attempts: HTTP 500" in out.error
        assert c.take_counters()["llm_failed"] == 1


def test_cache_means_a_rerun_never_pays_twice(tmp_path):
    with ChatTestServer() as server:
        c = _client(server, tmp_path, usd_per_million_input=1e6, usd_per_million_output=1e6)
        first = c.complete_many([_ask(c, f"q{i}") for i in range(10)])
        assert c.take_counters()["llm_cost_micro_usd"] > 0
        again = _client(server, tmp_path).complete_many([_ask(c, f"q{i}") for i in range(10)])
        assert [a.text for a in again] == [f.text for f in first] and all(a.cached for a in again)
        assert len(server.requests) == 10


def test_concurrency_is_bounded_and_seed_is_sent(tmp_path):
    with ChatTestServer(slow_s=0.2) as server:
        server.faults.extend(["slow"] * 12)
        c = _client(server, tmp_path, concurrency=3, cache=False, seed=7)
        out = c.complete_many([_ask(c, f"q{i}") for i in range(12)])
        assert all(o.text for o in out)
        assert 1 < server.max_in_flight <= 3
        assert {r["body"]["seed"] for r in server.requests} == {7}


def test_key_from_the_environment_and_a_clear_rejection(tmp_path, monkeypatch):
    with ChatTestServer(require_key="s3cret") as server:
        monkeypatch.setenv("MY_LLM_KEY", "s3cret")
        ok = _client(server, tmp_path, api_key_env="MY_LLM_KEY")
        assert ok.complete(_ask(ok, "hi")).text == "reply to: hi"
        monkeypatch.setenv("MY_LLM_KEY", "wrong-key-value")
        bad = _client(server, tmp_path, api_key_env="MY_LLM_KEY", cache=False)
        with pytest.raises(FatalOpError, match="set MY_LLM_KEY") as err:
            bad.complete(_ask(bad, "hi"))
        assert "wrong-key-value" not in str(err.value)
        monkeypatch.delenv("MY_LLM_KEY")
        unset = _client(server, tmp_path, api_key_env="MY_LLM_KEY", cache=False)
        with pytest.raises(FatalOpError, match="no key was sent: set MY_LLM_KEY"):
            unset.complete(_ask(unset, "hi"))
