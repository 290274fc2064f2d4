"""A real, scripted OpenAI-compatible HTTP server on 127.0.0.1 for the LLM advisor's tests.

Not a mock of the client: the real ``openai`` client talks HTTP to this server, so
retries, timeouts, status codes and headers go through the same code paths as
against a real endpoint. The server replays a script, one item per request to
``POST /v1/chat/completions``:

* a ``str``: a normal ``chat.completion`` reply with that content;
* ``reply(content, ...)``: the same with explicit usage / finish_reason;
* ``status(code, retry_after=...)``: an error reply (500, 429 with Retry-After, 401...);
* ``delay(seconds, content)``: wait before answering (to trip the client's timeout);
* ``huge(n_bytes, chunked=False)``: a well-formed reply whose content is ``n_bytes`` long.

When the script runs out the server answers 500 "script exhausted", so a test
that makes more calls than it scripted fails loudly instead of hanging.
Every request is recorded (method, path, headers, parsed JSON body) for asserts.

Usage::

    with ScriptedLLMServer(["```python\\n...\\n```"]) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="k")
        ...
        assert srv.requests[0].headers["authorization"] == "Bearer k"
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Union


@dataclass
class Reply:
    """One scripted answer. ``content`` None with ``status`` >= 400 means an error reply."""

    content: Optional[str] = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    prompt_tokens: Optional[int] = None  # None: estimated from the request (chars / 4)
    completion_tokens: Optional[int] = None
    finish_reason: str = "stop"
    huge_bytes: int = 0  # > 0: content is this many bytes of filler
    include_usage: bool = True
    chunked: bool = False  # send the body with Transfer-Encoding: chunked (no Content-Length)


ScriptItem = Union[str, Reply]


def reply(content: str, *, prompt_tokens: Optional[int] = None, completion_tokens: Optional[int] = None,
          finish_reason: str = "stop", include_usage: bool = True) -> Reply:
    """A successful reply with explicit usage figures or finish reason."""
    return Reply(content=content, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 finish_reason=finish_reason, include_usage=include_usage)


def status(code: int, *, retry_after: Optional[float] = None, message: str = "") -> Reply:
    """An HTTP error reply in OpenAI's error format; ``retry_after`` sets the Retry-After header."""
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return Reply(content=message or f"scripted error {code}", status=code, headers=headers)


def delay(seconds: float, content: str = "late") -> Reply:
    """Answer only after ``seconds`` (the client should have timed out by then)."""
    return Reply(content=content, delay_s=seconds)


def huge(n_bytes: int, chunked: bool = False) -> Reply:
    """A well-formed completion whose content is ``n_bytes`` of filler text.

    ``chunked`` leaves out Content-Length, so a client cannot refuse it up front.
    """
    return Reply(content=None, huge_bytes=n_bytes, chunked=chunked)


@dataclass
class RecordedRequest:
    """What the server received: the headers (lower-cased names) and the JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    at: float

    def prompt_text(self) -> str:
        """All message contents of a chat request, joined."""
        msgs = (self.body or {}).get("messages", []) if isinstance(self.body, dict) else []
        return "\n".join(str(m.get("content", "")) for m in msgs)


class ScriptedLLMServer:
    """ThreadingHTTPServer on an ephemeral 127.0.0.1 port replaying a script; a context manager."""

    def __init__(self, script: Optional[list[ScriptItem]] = None, model: str = "scripted-model") -> None:
        self.script: list[ScriptItem] = list(script or [])
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()  # wakes delayed handlers at shutdown
        self._httpd: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI base URL (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "ScriptedLLMServer":
        """Bind an ephemeral port and serve in a daemon thread."""
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="scripted-llm-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed handlers are woken so nothing lingers."""
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "ScriptedLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ script

    def push(self, *items: ScriptItem) -> None:
        """Append replies to the script."""
        with self._lock:
            self.script.extend(items)

    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completion requests received so far."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def _next(self) -> Reply:
        with self._lock:
            if not self.script:
                return Reply(content="script exhausted: the test made more calls than it scripted", status=500)
            item = self.script.pop(0)
        return Reply(content=item) if isinstance(item, str) else item

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)


def _make_handler(server: ScriptedLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
            pass

        def _read_body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _record(self, raw: bytes) -> RecordedRequest:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            rec = RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                  body, raw, time.time())
            server._record(rec)
            return rec

        def _send(self, code: int, payload: bytes, headers: Optional[dict[str, str]] = None,
                  chunked: bool = False) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                # Write in pieces: a client that stops reading a huge body closes the socket.
                view = memoryview(payload)
                for i in range(0, len(view), 1 << 16):
                    piece = view[i:i + (1 << 16)]
                    if chunked:
                        self.wfile.write(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
                    else:
                        self.wfile.write(piece)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close_connection = True

        def do_GET(self) -> None:
            self._record(b"")
            if self.path.rstrip("/") == "/v1/models":
                body = {"object": "list", "data": [{"id": server.model, "object": "model", "created": 0,
                                                     "owned_by": "tests"}]}
                self._send(200, json.dumps(body).encode())
            else:
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())

        def do_POST(self) -> None:
            rec = self._record(self._read_body())
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
                return
            item = server._next()
            if item.delay_s and server._stop.wait(item.delay_s):
                self.close_connection = True
                return
            if item.status >= 400:
                err = {"error": {"message": item.content, "type": "scripted", "code": item.status}}
                self._send(item.status, json.dumps(err).encode(), item.headers)
                return
            content = "x" * item.huge_bytes if item.huge_bytes else (item.content or "")
            prompt = rec.prompt_text()
            usage = {
                "prompt_tokens": item.prompt_tokens if item.prompt_tokens is not None else max(1, len(prompt) // 4),
                "completion_tokens": (item.completion_tokens if item.completion_tokens is not None
                                      else max(1, len(content) // 4)),
            }
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            body: dict[str, Any] = {
                "id": f"chatcmpl-{len(server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": (rec.body or {}).get("model", server.model) if isinstance(rec.body, dict) else server.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": item.finish_reason}],
            }
            if item.include_usage:
                body["usage"] = usage
            self._send(200, json.dumps(body).encode(), item.headers, chunked=item.chunked)

    return Handler
