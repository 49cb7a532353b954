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


class ChatTestServer:
    """``faults``: a queue of actions for the next requests, afterwards every request is answered:

    - "ok": answered; "429" (Retry-After 0.05 s), "500", "401": that status;
    - "slow": answered after ``slow_s``; "malformed": a 200 whose JSON stops half-way;
    - "trickle": the whole answer, status line included, one byte every ``trickle_s`` (each read
      of the client gets data in time; only a deadline on the whole request ends it);
    - "badgzip": a 200 marked ``Content-Encoding: gzip`` whose body is not gzip;
    - "echo_key_400": a 400 whose body echoes the Authorization header and a URL with the key.

    ``require_key``: every request without ``Authorization: Bearer <key>`` gets a 401.
    ``answer(body) -> str`` makes the reply; None answers that request with a 500 (a fault aimed
    at chosen prompts, whatever order concurrent requests arrive in)."""

    def __init__(self, answer=default_answer, slow_s: float = 2.0, require_key: str | None = None,
                 trickle_s: float = 0.05):
        self.answer = answer
        self.slow_s = slow_s
        self.trickle_s = trickle_s
        self.require_key = require_key
        self.faults: deque[str] = deque()
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

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
                text = server.answer(body)
                if text is None:
                    return None
                words = sum(len(m["content"].split()) for m in body["messages"])
                return {"id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": words, "completion_tokens": len(text.split()),
                                  "total_tokens": words + len(text.split())}}

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

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
