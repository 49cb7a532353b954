"""The LLM client at throughput (issue 19 item 7; figures in bench/llm_throughput.py): the configured
concurrency is really reached, over kept-alive connections; cached rows are answered without a
single request (nor a connection); the client's loop and pool go away with it."""

from __future__ import annotations

import gc
import threading

from tests.llm_test_server import ChatTestServer
from thresher.pipeline.llm import ChatClient, LLMConfig


def _client(server, tmp_path, **kw) -> ChatClient:
    return ChatClient(LLMConfig(base_url=server.url, model="test", timeout_s=10.0, cache_dir=str(tmp_path / "cache"), **kw))


def _bodies(client, n, tag="q"):
    return [client.body([{"role": "user", "content": f"{tag}{i}"}]) for i in range(n)]


def _llm_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "thresher-llm" and t.is_alive()}


def test_concurrency_is_reached_over_kept_alive_connections(tmp_path):
    with ChatTestServer(delay_s=0.2, keep_alive=True) as server:
        c = _client(server, tmp_path, concurrency=32, cache=False)
        out = c.complete_many(_bodies(c, 96))
        assert [o.text for o in out] == [f"reply to: q{i}" for i in range(96)]
        assert server.max_in_flight == 32  # every slot used, never more
        assert server.connections <= 32  # three rounds over the same connections, none reopened
        c.close()


def test_cached_rows_are_answered_without_any_request(tmp_path):
    with ChatTestServer(keep_alive=True) as server:
        first = _client(server, tmp_path, concurrency=16)
        paid = first.complete_many(_bodies(first, 300))
        sent, connections = len(server.requests), server.connections
        assert sent == 300
        replay = _client(server, tmp_path, concurrency=16)
        again = replay.complete_many(_bodies(replay, 300))
        assert [a.text for a in again] == [p.text for p in paid] and all(a.cached for a in again)
        assert len(server.requests) == sent and server.connections == connections
        assert replay._http is None  # no connection pool was even opened
        assert replay.take_counters()["llm_requests"] == 300
        # hits and misses mixed: only the misses are sent, answers stay in request order
        mixed = _bodies(replay, 20) + _bodies(replay, 20, tag="new")
        out = replay.complete_many(mixed[::2] + mixed[1::2])
        assert [o.text for o in out] == [f"reply to: {b['messages'][0]['content']}" for b in mixed[::2] + mixed[1::2]]
        assert len(server.requests) == sent + 20
        assert {r["body"]["messages"][0]["content"] for r in server.requests[sent:]} == {f"new{i}" for i in range(20)}
        first.close()
        replay.close()


def test_a_request_repeated_within_a_call_is_sent_once(tmp_path):
    with ChatTestServer(keep_alive=True) as server:
        c = _client(server, tmp_path, concurrency=4)
        bodies = _bodies(c, 5) * 3  # every prompt three times
        out = c.complete_many(bodies)
        assert [o.text for o in out] == [f"reply to: q{i}" for i in range(5)] * 3
        assert len(server.requests) == 5
        counters = c.take_counters()
        assert counters["llm_requests"] == 15 and counters["llm_cached"] == 10
        assert counters["llm_prompt_tokens"] == 5  # only what was paid for (one word per prompt)
        c.close()


def test_the_loop_and_pool_go_with_the_client(tmp_path):
    with ChatTestServer(keep_alive=True) as server:
        for close in (False, True):
            before = _llm_threads()
            c = _client(server, tmp_path, cache=False)
            assert c.complete(_bodies(c, 1)[0]).text == "reply to: q0"
            (mine,) = _llm_threads() - before  # the client's own loop thread
            if close:
                c.close()
                c.close()  # twice is fine
                assert not mine.is_alive()
                assert c.complete(_bodies(c, 1, tag="after")[0]).text == "reply to: after0"  # usable again
                c.close()
            else:
                del c  # never closed: collected
                gc.collect()
                assert not mine.is_alive()
