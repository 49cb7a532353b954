"""A TEST SERVER that speaks the OpenAI chat-completions protocol (POST /v1/chat/completions), for
the one edge thresher cannot reach in tests: a hosted or self-served LLM. It answers
deterministically from the request and injects the faults real servers produce: 429 with
Retry-After, 500s, slow responses, malformed bodies, responses trickled a byte at a time, corrupt
gzip, 400s that echo the caller's key and 401s, on a script of upcoming requests; and it can demand
a key for every request."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def default_answer(body: dict) -> str:
    last = body["messages"][-1]["content"]
    if body.get("response_format", {}).get("type") == "json_object":
        return json.dumps({"answer": f"reply to: {last}", "score": len(last) % 10})
    return f"reply to: {last}"


def completion(body: dict, text: str | None) -> dict | None:
    """The chat-completion answer carrying ``text`` (None: none)."""
    if text is None:
        return None
    words = sum(len(m["content"].split()) for m in body["messages"])
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": words, "completion_tokens": len(text.split()),
                      "total_tokens": words + len(text.split())}}


def serve_asyncio(delay_s: float) -> None:
    """The same answers (no faults) from one asyncio process (aiohttp.web) with keep-alive: a
    server whose own cost stays out of a client benchmark at high concurrency."""
    import asyncio

    from aiohttp import web

    stats = {"requests": 0, "max_in_flight": 0, "in_flight": 0}

    async def chat(request):
        body = await request.json()
        stats["requests"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await asyncio.sleep(delay_s)
            return web.json_response(completion(body, default_answer(body)))
        finally:
            stats["in_flight"] -= 1

    async def get_stats(request):
        return web.json_response({k: v for k, v in stats.items() if k != "in_flight"})

    async def main():
        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", chat), web.get("/stats", get_stats)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        print(f"http://127.0.0.1:{port}/v1", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # a burst of new connections (high concurrency) is not refused

    def handle_error(self, request, client_address):  # a client closing its keep-alive connection
        pass


class ChatTestServer:
    """``faults``: a queue of actions for the next requests, afterwards every request is answered:

    - "ok": answered; "429" (Retry-After 0.05 s), "500", "401": that status;
    - "slow": answered after ``slow_s``; "malformed": a 200 whose JSON stops half-way;
    - "trickle": the whole answer, status line included, one byte every ``trickle_s`` (each read
      of the client gets data in time; only a deadline on the whole request ends it);
    - "badgzip": a 200 marked ``Content-Encoding: gzip`` whose body is not gzip;
    - "echo_key_400": a 400 whose body echoes the Authorization header and a URL with the key.

    ``require_key``: every request without ``Authorization: Bearer <key>`` gets a 401.
    ``delay_s``: every request waits this long before its answer (a fixed latency, for throughput
    benchmarks); ``keep_alive``: HTTP/1.1 persistent connections, as vLLM and hosted APIs serve.
    ``answer(body) -> str`` makes the reply; None answers that request with a 500 (a fault aimed
    at chosen prompts, whatever order concurrent requests arrive in)."""

    def __init__(self, answer=default_answer, slow_s: float = 2.0, require_key: str | None = None,
                 trickle_s: float = 0.05, delay_s: float = 0.0, keep_alive: bool = False):
        self.answer = answer
        self.delay_s = delay_s
        self.slow_s = slow_s
        self.trickle_s = trickle_s
        self.require_key = require_key
        self.faults: deque[str] = deque()
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0  # TCP connections accepted (keep-alive reuses them)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            disable_nagle_algorithm = keep_alive  # headers and body leave at once (no delayed-ACK stall)

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()
                with server._lock:
                    server.connections += 1

            def do_GET(self):  # noqa: N802 - GET /stats: the counters, for a server in another process
                if self.path.rstrip("/") != "/stats":
                    self.send_error(404)
                    return
                with server._lock:
                    stats = {"requests": len(server.requests), "max_in_flight": server.max_in_flight,
                             "connections": server.connections}
                self._send(200, stats)

            def do_POST(self):  # noqa: N802 - http.server's name
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with server._lock:
                    server.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    action = server.faults.popleft() if server.faults else "ok"
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    self._answer(body, action)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, body, action):
                if server.require_key and self.headers.get("Authorization") != f"Bearer {server.require_key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if action == "429":
                    return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.05"})
                if action == "500":
                    return self._send(500, {"error": {"message": "boom"}})
                if action == "401":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if action == "echo_key_400":
                    auth = self.headers.get("Authorization") or ""
                    key = auth.removeprefix("Bearer ")
                    return self._send(400, {"error": {"message": f"bad request from {auth}; key {key} is not "
                                                                 f"allowed, see https://llm.test/keys?api_key={key}"}})
                if action == "badgzip":
                    raw = b"this is not gzip at all"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return None
                if action == "trickle":
                    return self._trickle(body)
                if action == "slow":
                    time.sleep(server.slow_s)
                if action == "malformed":
                    raw = b'{"choices": [{"message": '
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return None
                payload = self._completion(body)
                if payload is None:
                    return self._send(500, {"error": {"message": "cannot answer this one"}})
                return self._send(200, payload)

            def _completion(self, body):
                return completion(body, server.answer(body))

            def _trickle(self, body):
                payload = json.dumps(self._completion(body) or {}).encode()
                raw = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                       + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                self.close_connection = True
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    for i in range(len(raw)):  # bounded: one pass over the response
                        self.wfile.write(raw[i:i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle_s)

            def _send(self, code, payload, headers=None):
                raw = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    self.wfile.write(raw)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


if __name__ == "__main__":  # a server in its own process (bench/llm_throughput.py): prints its URL
    import argparse

    ap = argparse.ArgumentParser(description="OpenAI-compatible test server on 127.0.0.1")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before every answer")
    ap.add_argument("--keep-alive", action="store_true", help="HTTP/1.1 persistent connections")
    ap.add_argument("--asyncio", action="store_true", help="one asyncio process (aiohttp.web, keep-alive, no faults)")
    args = ap.parse_args()
    if args.asyncio:
        serve_asyncio(args.delay)
    else:
        with ChatTestServer(delay_s=args.delay, keep_alive=args.keep_alive) as srv:
            print(srv.url, flush=True)
            threading.Event().wait()
