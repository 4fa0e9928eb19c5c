"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, with injected faults.

It answers like an LLM that follows the STG rules (the effect after "Answer: ", the causal
"Name: value" strings as causes) and adds one invented phrase, so validation has something to drop.
Each row (keyed by its text) gets a fault plan chosen by a CRC of the text: the n-th request for a row
performs the n-th action of its plan, then the last action repeats.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PLANS = [
    ["ok"],
    ["429", "ok"],
    ["500", "500", "fenced"],
    ["slow", "ok"],
    ["garbage", "ok"],
    ["html", "badjson", "wrongshape", "ok"],  # 200 replies that are not chat completions
    ["429"],  # never recovers: the row must be reported as failed
]
# also served on request: "echo" (a 401 that echoes the request's key) and "everything" (a reply that
# calls every word of the row a cause, as a prompt injection in the row could make a model do)
CAUSAL = re.compile(r"(Smoking|Weight|Exercise): (\d+)")


def row_text(messages: list[dict]) -> str:
    content = messages[-1]["content"]
    return content.split("Text:\n", 1)[-1].rsplit("\n\nAnnotation:", 1)[0]


def plan_for(text: str) -> list[str]:
    return PLANS[zlib.crc32(text.encode()) % len(PLANS)]


def annotation(text: str) -> list[dict]:
    effect = text.rsplit("Answer: ", 1)[-1].strip()
    causes = [f"{n}: {v}" for n, v in CAUSAL.findall(text)] + ["Invented: 99"]
    return [{effect: causes}]


class ChatServer:
    """`revoke_after=n`: after n answered requests the key is refused (401, echoing it) from then on;
    `plan`: one plan for every row instead of the CRC's choice."""

    def __init__(
        self, delay: float = 0.0, slow_seconds: float = 2.0, revoke_after: int | None = None, plan=None
    ):
        self.delay, self.slow_seconds = delay, slow_seconds
        self.revoke_after, self.plan = revoke_after, plan
        self.answered = 0
        self.attempts: Counter = Counter()
        self.actions: Counter = Counter()
        self.auth_headers: set[str] = set()
        self.down = False  # True: every request gets a 503, and no attempt is counted
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.auth_headers.add(self.headers.get("Authorization", ""))
                text = row_text(body["messages"])
                if server.down:
                    return server.send(self, 503, {"error": {"message": "injected outage"}})
                with server.lock:
                    n = server.attempts[text]
                    server.attempts[text] += 1
                    plan = server.plan or plan_for(text)
                    action = plan[min(n, len(plan) - 1)]
                    if server.revoke_after is not None and server.answered >= server.revoke_after:
                        action = "echo"
                    server.answered += 1
                    server.actions[action] += 1
                time.sleep(server.delay)
                # the client may have timed out and hung up, as intended for "slow"
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.respond(self, body, text, action)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def respond(self, handler, body: dict, text: str, action: str) -> None:
        if action in ("429", "500"):
            payload = {"error": {"message": f"injected {action}", "type": "injected"}}
            return self.send(handler, int(action), payload, {"Retry-After": "0"} if action == "429" else {})
        if action == "echo":
            key = handler.headers.get("Authorization", "")
            return self.send(handler, 401, {"error": {"message": f"invalid key in header {key}"}})
        if action == "html":
            return self.send_raw(handler, 200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        if action == "badjson":
            return self.send_raw(handler, 200, b'{"id": "chatcmpl-test", "choi', "application/json")
        if action == "wrongshape":
            return self.send(handler, 200, {"detail": "upstream busy"})
        if action == "slow":
            time.sleep(self.slow_seconds)
        content = json.dumps(annotation(text))
        if action == "everything":
            content = json.dumps([{text.rsplit("Answer: ", 1)[-1].strip(): re.findall(r"\w+", text)}])
        if action == "fenced":
            content = f"Sure! Here is the annotation:\n```json\n{content}\n```\nHope this helps."
        elif action == "garbage":
            content = "The answer depends on [Smoking and weight, roughly"
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        self.send(handler, 200, payload)

    @staticmethod
    def send(handler, status: int, payload: dict, headers: dict | None = None) -> None:
        ChatServer.send_raw(handler, status, json.dumps(payload).encode(), "application/json", headers)

    @staticmethod
    def send_raw(handler, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
