"""A TEST SERVER that speaks the OpenAI chat-completions protocol (POST /v1/chat/completions), for
the one edge thresher cannot reach in tests: a hosted or self-served LLM. It answers
deterministically from the request and injects the faults real servers produce: 429 with
Retry-After, 500s, slow responses and malformed bodies, on a script of upcoming requests."""

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
    """``faults``: a queue of actions for the next requests ("429", "500", "slow", "malformed",
    "ok"); afterwards every request is answered. ``answer(body) -> str`` makes the reply."""

    def __init__(self, answer=default_answer, slow_s: float = 2.0, require_key: str | None = None):
        self.answer = answer
        self.slow_s = slow_s
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
                text = server.answer(body)
                words = sum(len(m["content"].split()) for m in body["messages"])
                return self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                                        "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": text}}],
                                        "usage": {"prompt_tokens": words, "completion_tokens": len(text.split()),
                                                  "total_tokens": words + len(text.split())}})

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
