"""The LLM client and ops under the faults users hit (issue 12): a server trickling bytes past the
timeout, a cache that ignored the server, an API key echoed into quarantine, a wrong key or a
server that is down (the run must stop, not quarantine every row), corrupt gzip, and a resumed
run that forgot what it had paid. All against the local test server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.conftest import read_output, read_quarantine, run_recipe, write_jsonl
from tests.llm_test_server import ChatTestServer
from thresher.pipeline.errors import FatalOpError
from thresher.pipeline.llm import REDACTED, ChatClient, LLMConfig, redact

CHAT_INPUT = {"text_key": None}
LENIENT = {"max_quarantine_fraction": 1.0}  # these runs quarantine rows on purpose


def _client(server_url, tmp_path, run_id="", attempt_id="", **kw) -> ChatClient:
    cfg = {"base_url": server_url, "model": "test", "backoff_s": 0.01, "timeout_s": 2.0,
           "cache_dir": str(tmp_path / "cache"), **kw}
    return ChatClient(LLMConfig(**cfg), run_id=run_id, attempt_id=attempt_id)


def _ask(client, text, **overrides):
    return client.body([{"role": "user", "content": text}], **overrides)


def _free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ 1. whole-request deadline
def test_a_trickled_answer_is_a_valid_answer(tmp_path):
    """Control for the next test: the trickle fault delivers a correct answer when given time."""
    with ChatTestServer(trickle_s=0.001) as server:
        server.faults.append("trickle")
        c = _client(server.url, tmp_path, timeout_s=30.0, cache=False)
        assert c.complete(_ask(c, "slowly")).text == "reply to: slowly"


def test_timeout_bounds_the_whole_attempt_not_each_read(tmp_path):
    """Each byte arrives well within the timeout (0.02 s apart), so a per-read timeout never fires
    and the answer would take ~8 s; a deadline per attempt ends each attempt at 0.5 s."""
    with ChatTestServer(trickle_s=0.02) as server:
        server.faults.extend(["trickle", "trickle"])
        c = _client(server.url, tmp_path, timeout_s=0.5, max_retries=1)
        t0 = time.monotonic()
        out = c.complete(_ask(c, "hello"))
        elapsed = time.monotonic() - t0
        assert out.text is None and "gave up after 2 attempts: timeout after 0.5 s" in out.error
        assert out.retries == 1 and len(server.requests) == 2
        # without the deadline the trickle takes ~8 s per attempt; half of one such attempt leaves a
        # loaded CI machine room without letting the bug through
        assert elapsed < 4, f"two 0.5 s attempts took {elapsed:.2f} s"
        # the server had answered, slowly: a timeout is a per-row failure, never "cannot reach"
        assert c.take_counters()["llm_failed"] == 1


# ------------------------------------------------------------------------------ 2. cache key
def test_cache_key_includes_the_server_and_every_parameter(tmp_path):
    with ChatTestServer(answer=lambda b: "from one") as one, ChatTestServer(answer=lambda b: "from two") as two:
        a = _client(one.url, tmp_path)
        assert a.complete(_ask(a, "q")).text == "from one"
        assert a.complete(_ask(a, "q")).cached  # control: the same request again is a hit
        b = _client(two.url, tmp_path)  # same model name, same cache, another server
        got = b.complete(_ask(b, "q"))
        assert got.text == "from two" and not got.cached and len(two.requests) == 1
        variants = [_ask(a, "q", temperature=0.5), _ask(a, "q", max_tokens=7), _ask(a, "q", seed=99),
                    _ask(a, "q", json_mode=True), _ask(a, "q2"), {**_ask(a, "q"), "model": "other"},
                    {**_ask(a, "q"), "top_p": 0.5}]
        assert not any(c.cached for c in a.complete_many(variants))
        assert len(one.requests) == 1 + len(variants)


# ------------------------------------------------------------------------------ 3. redaction
def test_redact_removes_every_kind_of_credential():
    text = ("Authorization: Bearer abc.DEF-123_xyz; key sk-proj-AbCdEf0123456789 used at "
            "https://h.test/v1?api_key=k1&key=k2&token=k3&access_token=k4&model=m and https://bob:pw9@h.test/ "
            '{"api_key": "k5"} and the configured my-secret-value and my%2Fslash')
    out = redact(text, ["my-secret-value", "my/slash"])
    for leaked in ("abc.DEF-123_xyz", "AbCdEf0123456789", "k1", "k2", "k3", "k4", "pw9", "k5", "my-secret-value", "my%2Fslash"):
        assert leaked not in out, (leaked, out)
    assert "model=m" in out and "sk-learn" in redact("use sk-learn here")  # not everything is a secret
    assert out.count(REDACTED) >= 10


def test_an_error_body_echoing_the_key_never_reaches_quarantine_or_ledger(tmp_path, monkeypatch):
    secret = "zq9-PLAIN-secret-4471"  # matches no pattern: only the configured key's value catches it
    monkeypatch.setenv("MY_LLM_KEY", secret)
    rows = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(3)]
    src = write_jsonl(tmp_path / "q.jsonl", rows)
    with ChatTestServer() as server:
        server.faults.append("echo_key_400")
        llm = {"base_url": server.url, "model": "m", "api_key_env": "MY_LLM_KEY", "concurrency": 1,
               "cache_dir": str(tmp_path / "cache")}
        run_recipe([src], tmp_path / "out", [{"llm_respond": {"llm": llm}}], input=CHAT_INPUT, policy=LENIENT)
        assert server.requests[0]["auth"] == f"Bearer {secret}"  # the server did get (and echo) the key
    (bad,) = read_quarantine(tmp_path / "out")
    assert bad["id"] == "q0" and "HTTP 400" in bad["reason"] and REDACTED in bad["reason"]
    written = [f.read_text() for f in (tmp_path / "out").rglob("*") if f.is_file()]
    assert written and not any(secret in t for t in written)


# ------------------------------------------------------------------------------ 4. fatal: key, reachability
def test_a_rejected_key_stops_every_request_after_the_first_answer(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "wrong-key-1234")
    with ChatTestServer(require_key="right-key") as server:
        c = _client(server.url, tmp_path, api_key_env="MY_LLM_KEY", concurrency=4)
        with pytest.raises(FatalOpError, match="set MY_LLM_KEY") as err:
            c.complete_many([_ask(c, f"q{i}") for i in range(50)])
        assert server.url in str(err.value) and "wrong-key-1234" not in str(err.value)
        assert len(server.requests) <= 4  # those in flight when the first 401 came back


def test_an_unreachable_server_fails_fast_before_any_answer(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    c = _client(url, tmp_path, max_retries=5, backoff_s=0.5)  # retrying would take ~8 s per request
    t0 = time.monotonic()
    with pytest.raises(FatalOpError, match=rf"cannot reach the LLM server at {url}: ConnectError"):
        c.complete_many([_ask(c, f"q{i}") for i in range(20)])
    assert time.monotonic() - t0 < 2.0


def test_a_server_lost_after_answering_is_a_per_row_failure(tmp_path):
    with ChatTestServer() as server:
        c = _client(server.url, tmp_path, max_retries=1, cache=False)
        assert c.complete(_ask(c, "first")).text == "reply to: first"
    out = c.complete(_ask(c, "second"))  # the server is gone now
    assert out.text is None and "gave up after 2 attempts: connection error (ConnectError" in out.error


def _shipped(tmp_path, monkeypatch, url: str, workers: int):
    """The shipped dpo-synthetic recipe (its demo prompts) against ``url``."""
    from thresher.pipeline.recipe import load_recipe
    from thresher.pipeline.run import run

    monkeypatch.setenv("THRESHER_LLM_BASE_URL", url)
    monkeypatch.setenv("THRESHER_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe("dpo-synthetic", output=str(tmp_path / "out"), workers=workers)
    return recipe, lambda: run(recipe)


def _looks_unfinished(out):
    assert not (out / "_SUCCESS").exists()
    if (out / "ledger.json").exists():
        assert json.loads((out / "ledger.json").read_text())["status"] == "failed"


def test_dpo_synthetic_with_a_wrong_key_stops_at_the_first_rejection(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-0123456789abcdef")
    with ChatTestServer(require_key="sk-right-0123456789abcdef") as server:
        recipe, go = _shipped(tmp_path, monkeypatch, server.url, workers=1)
        with pytest.raises(FatalOpError, match="set OPENAI_API_KEY") as err:
            go()
        sent = len(server.requests)
    (cand,) = [o for o in recipe.ops if o.name == "llm_candidates"]
    # the requests in flight when the first 401 came back, nothing after (the demo asks 240 distinct ones)
    assert 1 <= sent <= cand.params.llm.concurrency
    assert server.url in str(err.value) and "0123456789abcdef" not in str(err.value)
    _looks_unfinished(tmp_path / "out")
    assert not any("0123456789abcdef" in f.read_text() for f in (tmp_path / "out").rglob("*.json*") if f.is_file())


def test_dpo_synthetic_with_no_server_fails_fast(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    _, go = _shipped(tmp_path, monkeypatch, url, workers=2)
    t0 = time.monotonic()
    with pytest.raises(FatalOpError, match=f"cannot reach the LLM server at {url}"):
        go()
    assert time.monotonic() - t0 < 60  # worker start-up included; retrying every request took minutes
    _looks_unfinished(tmp_path / "out")


def _prompts(tmp_path, texts):
    rows = [{"id": f"p{i}", "messages": [{"role": "user", "content": t}]} for i, t in enumerate(texts)]
    return write_jsonl(tmp_path / "prompts.jsonl", rows)


def test_rows_quarantined_for_failed_requests_carry_the_error(tmp_path):
    """Per-row failures stay per-row (the run goes on), and the reason says what the server did."""
    src = _prompts(tmp_path, ["good one", "please fail", "good two"])
    def answer(body):  # every request about "please fail" gets a 500; the others an answer with a score
        return None if "please fail" in body["messages"][-1]["content"] else "A fine answer. Score: 7/10"

    with ChatTestServer(answer=answer) as server:
        llm = {"base_url": server.url, "model": "m", "max_retries": 1, "backoff_s": 0.01, "cache_dir": str(tmp_path / "c")}
        res = run_recipe([src], tmp_path / "cand", [{"llm_candidates": {"llm": llm, "n": 2}}], input=CHAT_INPUT,
                         policy=LENIENT)
        (bad,) = read_quarantine(tmp_path / "cand")
        assert bad["id"] == "p1"
        assert bad["reason"] == "fewer than 2 answers (0 of 2): 2 of 2 requests failed: gave up after 2 attempts: HTTP 500"
        assert res.ledger["llm_candidates"].quarantined == {"fewer than 2 answers": 1}
        assert {r["id"] for r in read_output(tmp_path / "cand")} == {"p0", "p2"}

        res = run_recipe([src], tmp_path / "judge", [{"llm_judge": {"llm": llm}}], input=CHAT_INPUT, policy=LENIENT)
        (bad,) = read_quarantine(tmp_path / "judge")
        assert bad["reason"] == "llm request failed (gave up after 2 attempts: HTTP 500)"


# ------------------------------------------------------------------------------ 5. corrupt gzip
def test_corrupt_gzip_is_retried_then_a_per_row_failure(tmp_path):
    with ChatTestServer() as server:
        server.faults.append("badgzip")
        c = _client(server.url, tmp_path, max_retries=2, cache=False)
        out = c.complete(_ask(c, "x"))
        assert out.text == "reply to: x" and out.retries == 1 and len(server.requests) == 2
        server.faults.extend(["badgzip"] * 3)
        out = c.complete(_ask(c, "y"))
        assert out.text is None and "gave up after 3 attempts: undecodable response" in out.error
        assert out.retries == 2 and len(server.requests) == 5


def test_an_op_never_resends_requests_through_bisection(tmp_path):
    src = _prompts(tmp_path, ["first", "second", "third", "fourth"])
    with ChatTestServer() as server:
        server.faults.extend(["badgzip"] * 3)  # concurrency 1: the first row's three attempts
        llm = {"base_url": server.url, "model": "m", "max_retries": 2, "backoff_s": 0.01, "concurrency": 1,
               "cache_dir": str(tmp_path / "c")}
        res = run_recipe([src], tmp_path / "out", [{"llm_respond": {"llm": llm}}], input=CHAT_INPUT, policy=LENIENT)
        assert len(server.requests) == 3 + 3
    (bad,) = read_quarantine(tmp_path / "out")
    assert bad["id"] == "p0" and "undecodable response" in bad["reason"]
    c = res.ledger["llm_respond"].counters
    assert c["llm_requests"] == 4 and c["llm_failed"] == 1 and c["llm_retries"] == 2


# ------------------------------------------------------------------------------ 6. spend across --resume
def test_cache_hits_paid_by_this_run_count_as_its_spend(tmp_path):
    prices = {"usd_per_million_input": 1e6, "usd_per_million_output": 1e6}
    with ChatTestServer() as server:
        first = _client(server.url, tmp_path, run_id="run-1", attempt_id="a1", **prices)
        bodies = [_ask(first, f"question number {i}") for i in range(3)]
        first.complete_many(bodies)
        paid = first.take_counters()
        assert paid["llm_cached"] == 0 and paid["llm_prompt_tokens"] == 9 and paid["llm_cost_micro_usd"] > 0

        resumed = _client(server.url, tmp_path, run_id="run-1", attempt_id="a2", **prices)  # after a kill
        resumed.complete_many(bodies)
        assert resumed.take_counters() == paid
        # another run, no run id, or the attempt that paid (a repeated request): free cache hits
        for other, attempt in (("run-2", "a1"), ("", ""), ("run-1", "a1")):
            c = _client(server.url, tmp_path, run_id=other, attempt_id=attempt, **prices)
            c.complete_many(bodies)
            counters = c.take_counters()
            assert counters["llm_cached"] == 3 and counters["llm_prompt_tokens"] == 0 and counters["llm_cost_micro_usd"] == 0
        assert len(server.requests) == 3


def _ledger_counters(out):
    led = json.loads((out / "ledger.json").read_text())
    return led["ops"]["llm_respond"]["counters"]


def test_an_interrupted_then_resumed_run_reports_what_it_paid(tmp_path):
    """The first run dies at its 4th request (the server starts rejecting the key); the requests
    paid before come back from the cache on --resume and still count as this run's spend."""
    src = _prompts(tmp_path, [f"prompt number {i}" for i in range(8)])

    def process(server, cache):
        return [{"llm_respond": {"llm": {"base_url": server.url, "model": "m", "concurrency": 1, "cache_dir": str(cache),
                                         "usd_per_million_input": 1e6, "usd_per_million_output": 1e6}}}]

    with ChatTestServer() as server:
        run_recipe([src], tmp_path / "clean", process(server, tmp_path / "c1"), input=CHAT_INPUT)
        clean = _ledger_counters(tmp_path / "clean")
        assert clean["llm_cost_micro_usd"] > 0 and not clean.get("llm_cached")

        server.faults.extend(["ok", "ok", "ok", "401"])
        with pytest.raises(FatalOpError):
            run_recipe([src], tmp_path / "killed", process(server, tmp_path / "c2"), input=CHAT_INPUT)
        _looks_unfinished(tmp_path / "killed")
        n = len(server.requests)
        run_recipe([src], tmp_path / "killed", process(server, tmp_path / "c2"), input=CHAT_INPUT, resume=True)
        assert len(server.requests) == n + 5  # the 3 paid before come from the cache
    assert _ledger_counters(tmp_path / "killed") == clean
    assert read_output(tmp_path / "killed") == read_output(tmp_path / "clean")
