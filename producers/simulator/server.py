"""The provider simulator: an aiohttp server speaking the OpenAI streaming chat protocol.

It serves several named endpoints at ``/{name}/v1/chat/completions`` (``/v1/chat/completions`` picks the
endpoint whose name equals the request's ``model``, else the first one). Every request's ground truth, the
simulator's own ``time.monotonic_ns()`` when the request arrived and when each chunk was written, is kept
and served at ``GET /_sim/ground-truth``. "Arrived" is the kernel's receive time of the request's first
bytes (``ArrivalStamps`` over ``StampedTransport``), not when aiohttp got round to the handler. Runs
in a background thread (``SimulatorServer``) or in the foreground (``tokenpulse simulate``). It is a test
and demo tool, not a provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from tokenpulse.producers.simulator.profiles import LatencyProfile, ProfileChange, SimulatorConfig, effective_profile
from tokenpulse.producers.simulator.transport import StampedServer, accepted_arrival_ns

REQUEST_ID_HEADER = "X-Tokenpulse-Request-Id"
_RECEIVED_NS: ContextVar[int] = ContextVar("simulator_received_ns")  # aiohttp runs each request in its own task
MAX_GROUND_TRUTH = 200_000
_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "tokens",
    "stream",
    "to",
    "the",
    "probe",
]


@dataclass(slots=True)
class GroundTruth:
    """What the simulator did for one request, in its own monotonic nanoseconds."""

    request_id: str
    endpoint: str
    received_ns: int
    outcome: str = "ok"  # ok | http_429 | http_5xx | cut | invalid_json
    http_status: int = 200
    first_content_ns: int | None = None
    """When the first ``delta.content`` chunk was written (answer content only)."""
    content_ns: list[int] = field(default_factory=list)
    end_ns: int | None = None
    completion_tokens: int = 0
    """Every output token, reasoning included (what ``usage.completion_tokens`` says)."""
    prompt_tokens: int = 0
    first_token_ns: int | None = None
    """When the first output chunk of any kind (reasoning, content, tool call) was written."""
    first_answer_ns: int | None = None
    """When the first answer chunk (content or a tool-call fragment) was written."""
    token_ns: list[int] = field(default_factory=list)
    """When every output chunk was written, reasoning included."""
    reasoning_tokens: int = 0
    cached_prompt_tokens: int = 0
    tool_calls: int = 0
    request_fields: dict[str, Any] = field(default_factory=dict)
    """The request body's fields other than model, messages and streaming (sampling, limits, tools...)."""
    headers: list[str] = field(default_factory=list)
    """Names (never values) of the request's headers."""

    @property
    def ttft_ms(self) -> float | None:
        """Request arrival to the first output token of any kind."""
        if self.first_token_ns is None:
            return None
        return (self.first_token_ns - self.received_ns) / 1e6

    @property
    def ttfa_ms(self) -> float | None:
        """Request arrival to the first answer token (content or tool call)."""
        if self.first_answer_ns is None:
            return None
        return (self.first_answer_ns - self.received_ns) / 1e6

    def as_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["ttft_ms"] = self.ttft_ms
        document["ttfa_ms"] = self.ttfa_ms
        return document


class SimulatorState:
    """Profiles, scripted changes and ground truth; touched only from the server's event loop."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.clock = clock
        self.profiles: dict[str, LatencyProfile] = dict(config.endpoints)
        self.changes: list[ProfileChange] = list(config.changes)
        self.rng = random.Random(config.seed)
        self.started_ns = clock()
        self.ground_truth: OrderedDict[str, GroundTruth] = OrderedDict()
        self.lock = threading.Lock()
        self.arrivals: dict[asyncio.BaseProtocol, int] = {}
        """First-byte time of the request being received on each connection (see ``ArrivalStamps``)."""
        self.prompt_prefixes: dict[str, set[bytes]] = {}
        """Per endpoint, the message prefixes seen so far (the simulated prompt cache)."""
        self.close_connection_after = config.close_connection_after
        self.dropped_requests = 0
        """Requests dropped unanswered by ``close_connection_after``."""

    def cached_prompt_tokens(self, endpoint: str, messages: list[Any]) -> int:
        """Tokens of the longest prefix of ``messages`` (whole messages) an earlier request sent; remembers these."""
        seen = self.prompt_prefixes.setdefault(endpoint, set())
        if len(seen) > MAX_GROUND_TRUTH:
            seen.clear()
        keys = [orjson.dumps(messages[: i + 1]) for i in range(len(messages))]
        cached = 0
        for i in range(len(messages), 0, -1):
            if keys[i - 1] in seen:
                cached = _message_tokens(messages[:i])
                break
        seen.update(keys)
        return cached

    def elapsed_s(self) -> float:
        return (self.clock() - self.started_ns) / 1e9

    def profile(self, name: str) -> LatencyProfile:
        with self.lock:
            return effective_profile(name, self.profiles[name], self.changes, self.elapsed_s())

    def record(self, truth: GroundTruth) -> None:
        with self.lock:
            self.ground_truth[truth.request_id] = truth
            while len(self.ground_truth) > MAX_GROUND_TRUTH:
                self.ground_truth.popitem(last=False)


class ArrivalStamps(asyncio.Protocol):
    """Wraps aiohttp's protocol of one connection and stamps when the first bytes of each request arrive.

    The stamp is the kernel's receive time of those bytes, which ``StampedTransport`` hands out during
    ``data_received`` (with another transport or clock: the time ``data_received`` ran). aiohttp starts a
    handler two event-loop turns after the bytes were read, and a busy loop reads them late; both waits
    are the simulator's, not the network's, so they must not count as TTFT. A stamp is taken by the first
    ``data_received`` after the previous request's was claimed (``claim_arrival``, once the whole request
    body is in), so body bytes never start a new request. With ``state.close_connection_after`` = N, the
    first bytes of request N+1 on a connection close it instead, unanswered.
    """

    def __init__(self, inner: asyncio.Protocol, state: SimulatorState):
        self._inner = inner
        self._state = state
        self._arrivals = state.arrivals
        self._clock = state.clock
        self._transport: asyncio.BaseTransport | None = None
        self._requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner not in self._arrivals:
            self._requests += 1
            limit = self._state.close_connection_after
            if limit is not None and self._requests > limit and self._transport is not None:
                with self._state.lock:
                    self._state.dropped_requests += 1
                self._transport.close()
                return
            arrived = accepted_arrival_ns(self._transport) if self._clock is time.monotonic_ns else None
            self._arrivals[self._inner] = arrived if arrived is not None else self._clock()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arrivals.pop(self._inner, None)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def listen(
    runner: web.BaseRunner, state: SimulatorState, sock: socket.socket, loop: asyncio.AbstractEventLoop | None = None
) -> StampedServer:
    """Serve ``runner`` (set up) on the bound ``sock`` with arrival stamps, in ``loop`` (default: the running
    one); close the server before the runner's cleanup."""
    server = runner.server
    if server is None:
        raise RuntimeError("call runner.setup() before listen()")
    return StampedServer(sock, lambda: ArrivalStamps(server(), state)).start(loop)


def claim_arrival(state: SimulatorState, request: web.BaseRequest) -> int:
    """When the first bytes of ``request`` arrived (now, if it did not come through ``ArrivalStamps``).

    Call once the whole request has been read: bytes arriving later on the connection start the next one.
    """
    arrived_ns = state.arrivals.pop(request.protocol, None)
    return arrived_ns if arrived_ns is not None else state.clock()


def build_app(state: SimulatorState) -> web.Application:
    """The aiohttp application of a simulator."""

    @web.middleware
    async def arrival_time(request: web.Request, handler: Handler) -> web.StreamResponse:
        await request.read()  # the whole request is in; aiohttp keeps the body for the handler
        _RECEIVED_NS.set(claim_arrival(state, request))
        return await handler(request)

    app = web.Application(middlewares=[arrival_time])
    routes = web.RouteTableDef()

    @routes.post("/v1/chat/completions")
    async def default_endpoint(request: web.Request) -> web.StreamResponse:
        return await _chat(state, request, None)

    @routes.post("/{endpoint}/v1/chat/completions")
    async def named_endpoint(request: web.Request) -> web.StreamResponse:
        return await _chat(state, request, request.match_info["endpoint"])

    @routes.get("/_sim/ground-truth")
    async def ground_truth(request: web.Request) -> web.Response:
        wanted = request.query.get("request_id")
        with state.lock:
            rows = [t.as_json() for t in state.ground_truth.values() if wanted in (None, t.request_id)]
        return web.Response(body=orjson.dumps(rows), content_type="application/json")

    @routes.delete("/_sim/ground-truth")
    async def clear_ground_truth(request: web.Request) -> web.Response:
        with state.lock:
            state.ground_truth.clear()
        return web.json_response({"cleared": True})

    @routes.get("/_sim/profiles")
    async def profiles(request: web.Request) -> web.Response:
        current = {name: state.profile(name).model_dump() for name in state.profiles}
        return web.json_response({"elapsed_s": state.elapsed_s(), "endpoints": current})

    @routes.put("/_sim/profiles/{endpoint}")
    async def put_profile(request: web.Request) -> web.Response:
        name = request.match_info["endpoint"]
        try:
            profile = LatencyProfile.model_validate_json(await request.read())
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        with state.lock:
            state.profiles[name] = profile
        return web.json_response(profile.model_dump())

    @routes.post("/_sim/changes")
    async def add_change(request: web.Request) -> web.Response:
        try:
            change = ProfileChange.model_validate_json(await request.read())
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        with state.lock:
            state.changes.append(change)
        return web.json_response(change.model_dump())

    app.add_routes(routes)
    return app


async def _chat(state: SimulatorState, request: web.Request, endpoint: str | None) -> web.StreamResponse:
    received_ns = _RECEIVED_NS.get()
    try:
        body = orjson.loads(await request.read())
        if not isinstance(body, dict):
            raise ValueError("body is not an object")
    except ValueError:
        return web.json_response({"error": {"message": "request body is not a JSON object"}}, status=400)
    model = str(body.get("model", ""))
    if endpoint is None:
        endpoint = model if model in state.profiles else next(iter(state.profiles))
    if endpoint not in state.profiles:
        message = f"simulator has no endpoint {endpoint!r}; known: {sorted(state.profiles)}"
        return web.json_response({"error": {"message": message}}, status=404)
    profile = state.profile(endpoint)
    request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    truth = GroundTruth(request_id, endpoint, received_ns, prompt_tokens=_prompt_tokens(body))
    truth.request_fields = {k: v for k, v in body.items() if k not in ("model", "messages", "stream", "stream_options")}
    truth.headers = sorted(request.headers)
    state.record(truth)
    rng = state.rng
    if profile.reject_max_tokens and body.get("max_tokens") is not None:
        truth.outcome, truth.http_status, truth.end_ns = "http_400", 400, state.clock()
        message = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens'."
        error = {"message": message, "type": "invalid_request_error", "param": "max_tokens"}
        return web.json_response({"error": {**error, "code": "unsupported_parameter"}}, status=400)
    if profile.prompt_cache and isinstance(body.get("messages"), list):
        truth.cached_prompt_tokens = min(state.cached_prompt_tokens(endpoint, body["messages"]), truth.prompt_tokens)

    roll = rng.random()
    if roll < profile.rate_429:
        truth.outcome, truth.http_status, truth.end_ns = "http_429", 429, state.clock()
        return web.json_response(
            {"error": {"message": "simulated rate limit", "type": "rate_limit"}},
            status=429,
            headers={"Retry-After": f"{profile.retry_after_s:g}"},
        )
    if roll < profile.rate_429 + profile.error_rate:
        truth.outcome, truth.http_status, truth.end_ns = "http_5xx", 500, state.clock()
        return web.json_response({"error": {"message": "simulated server error"}}, status=500)

    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 64
    total_tokens = profile.output_tokens or int(max_tokens)
    every = total_tokens + profile.reasoning_tokens
    cut_at = rng.randint(1, max(1, every - 1)) if rng.random() < profile.cut_rate else None
    bad_at = rng.randint(1, max(1, every - 1)) if rng.random() < profile.invalid_json_rate else None
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk_id = f"chatcmpl-sim-{request_id[:12]}"
    created = int(time.time())

    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        event = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        return b"data: " + orjson.dumps(event) + b"\n\n"

    try:
        await _stream_tokens(
            state,
            request,
            response,
            truth,
            profile,
            frame,
            total_tokens,
            int(max_tokens),
            cut_at,
            bad_at,
            include_usage,
            chunk_id,
            created,
            model,
        )
    except ConnectionError:
        # The client hung up (after an injected fault, usually); keep the fault as the outcome.
        truth.end_ns = state.clock()
        if truth.outcome == "ok":
            truth.outcome = "client_gone"
    return response


async def _stream_tokens(
    state: SimulatorState,
    request: web.Request,
    response: web.StreamResponse,
    truth: GroundTruth,
    profile: LatencyProfile,
    frame: Callable[..., bytes],
    total_tokens: int,
    max_tokens: int,
    cut_at: int | None,
    bad_at: int | None,
    include_usage: bool,
    chunk_id: str,
    created: int,
    model: str,
) -> None:
    """Reasoning tokens (if any), then the answer: content, or ``profile.tool_calls`` tool calls."""
    rng = state.rng
    if profile.role_chunk:
        await response.write(frame({"role": "assistant", "content": ""}))
    prefill_s = (truth.prompt_tokens - truth.cached_prompt_tokens) * profile.prefill_ms_per_token / 1000.0
    await _sleep_until(truth.received_ns + int((profile.sample_ttft_s(rng) + prefill_s) * 1e9), state.clock)
    plan = [(True, profile.reasoning_tokens), (False, total_tokens)]
    sent_tokens = 0  # every output token, reasoning included
    answer_tokens = 0
    for reasoning, count in plan:
        sent_here = 0
        while sent_here < count:
            if sent_tokens > 0:
                await asyncio.sleep(profile.sample_gap_s(rng, reasoning))
            if cut_at is not None and sent_tokens >= cut_at:
                truth.end_ns = state.clock()
                if truth.outcome == "ok":  # the first injected fault is what the client saw
                    truth.outcome = "cut"
                if request.transport is not None:
                    request.transport.close()
                return
            if bad_at is not None and sent_tokens >= bad_at:
                truth.outcome = "invalid_json"
                await response.write(b'data: {"choices": [{"delta": {"content": "oops"\n\n')
                bad_at = None
            n = min(profile.tokens_per_chunk, count - sent_here)
            words = [_WORDS[(sent_tokens + i) % len(_WORDS)] for i in range(n)]
            if reasoning:
                delta: dict[str, Any] = {profile.reasoning_field: "".join(" " + w for w in words)}
            elif profile.tool_calls:
                delta = {"tool_calls": _tool_fragments(answer_tokens, n, total_tokens, profile.tool_calls, words)}
            else:
                delta = {"content": "".join(" " + w for w in words)}
            payload = frame(delta)
            now = state.clock()
            await response.write(payload)
            truth.token_ns.append(now)
            if truth.first_token_ns is None:
                truth.first_token_ns = now
            if not reasoning:
                if truth.first_answer_ns is None:
                    truth.first_answer_ns = now
                if not profile.tool_calls:
                    truth.content_ns.append(now)
                    if truth.first_content_ns is None:
                        truth.first_content_ns = now
                answer_tokens += n
            else:
                truth.reasoning_tokens += n
            sent_here += n
            sent_tokens += n
            truth.completion_tokens = sent_tokens
    if profile.tool_calls:
        truth.tool_calls = min(profile.tool_calls, total_tokens)
    finish = "tool_calls" if profile.tool_calls else ("length" if answer_tokens >= max_tokens else "stop")
    await response.write(frame({}, finish=finish))
    if include_usage:
        usage: dict[str, Any] = {
            "prompt_tokens": truth.prompt_tokens,
            "completion_tokens": sent_tokens,
            "total_tokens": truth.prompt_tokens + sent_tokens,
        }
        if profile.usage_details:
            usage["prompt_tokens_details"] = {"cached_tokens": truth.cached_prompt_tokens}
            usage["completion_tokens_details"] = {"reasoning_tokens": truth.reasoning_tokens}
        event = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    truth.end_ns = state.clock()
    await response.write_eof()


def _tool_fragments(first: int, n: int, total: int, calls: int, words: list[str]) -> list[dict[str, Any]]:
    """Fragments of answer tokens ``first .. first+n-1``; token ``k`` belongs to call ``k * calls // total``.

    A call's first fragment carries its id and function name, every fragment one argument token.
    """
    calls = min(calls, total)
    fragments: list[dict[str, Any]] = []
    for offset, word in enumerate(words):
        token = first + offset
        index = token * calls // total
        function: dict[str, str] = {"arguments": word}
        fragment: dict[str, Any] = {"index": index, "function": function}
        if token == 0 or (token - 1) * calls // total != index:
            fragment.update(id=f"call_{index}", type="function")
            function["name"] = f"tool_{index}"
        fragments.append(fragment)
    return fragments


async def _sleep_until(deadline_ns: int, clock: Callable[[], int]) -> None:
    remaining = (deadline_ns - clock()) / 1e9
    if remaining > 0:
        await asyncio.sleep(remaining)


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return _message_tokens(messages)


def _message_tokens(messages: list[Any]) -> int:
    """The simulator's token count of messages: one per whitespace-separated word of their content."""
    return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))


class SimulatorServer:
    """A simulator in a background thread: ``start()``, ``base_url``, ``endpoint_url(name)``, ``stop()``.

    ``set_profile(name, profile)`` replaces an endpoint's profile at once; ``add_change(change)`` schedules
    a change (``after_s`` counts from ``start()``; ``change_in(seconds, ...)`` counts from now).
    """

    def __init__(
        self,
        config: SimulatorConfig | dict[str, LatencyProfile],
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.config = config if isinstance(config, SimulatorConfig) else SimulatorConfig(endpoints=config)
        self.host = host
        self.port = port
        self.clock = clock
        self.state = SimulatorState(self.config, clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def endpoint_url(self, name: str) -> str:
        """The OpenAI ``base_url`` of one named endpoint, e.g. ``http://127.0.0.1:PORT/fast/v1``."""
        if name not in self.state.profiles:
            raise KeyError(f"simulator has no endpoint {name!r}; known: {sorted(self.state.profiles)}")
        return f"{self.base_url}/{name}/v1"

    def start(self) -> SimulatorServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.state.started_ns = self.clock()
        self._thread = threading.Thread(target=self._run, args=(sock,), name="tokenpulse-simulator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._runner = web.AppRunner(build_app(self.state), access_log=None, handle_signals=False)
            loop.run_until_complete(self._runner.setup())
            server = listen(self._runner, self.state, sock, loop)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(self._runner.cleanup())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the simulator's event loop (a test stalls the loop with it)."""
        if self._loop is None:
            raise RuntimeError("the simulator is not running")
        self._loop.call_soon_threadsafe(callback)

    def set_profile(self, name: str, profile: LatencyProfile) -> None:
        with self.state.lock:
            self.state.profiles[name] = profile

    def add_change(self, change: ProfileChange) -> None:
        with self.state.lock:
            self.state.changes.append(change)

    def change_in(self, seconds: float, **change: Any) -> ProfileChange:
        """Schedule a ``ProfileChange`` ``seconds`` from now, e.g. ``change_in(5, ttft_scale=3)``."""
        scheduled = ProfileChange(after_s=self.state.elapsed_s() + seconds, **change)
        self.add_change(scheduled)
        return scheduled

    def ground_truth(self) -> dict[str, GroundTruth]:
        """Ground truth of every request so far, by request id."""
        with self.state.lock:
            return dict(self.state.ground_truth)


async def serve_forever(config: SimulatorConfig, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Run a simulator in the current event loop until cancelled (for ``tokenpulse simulate``)."""
    state = SimulatorState(config)
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    sock = socket.create_server((host, port))
    server = listen(runner, state, sock)
    on_ready(f"http://{host}:{sock.getsockname()[1]}")
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await runner.cleanup()
