"""Where the ``WindowCore`` runs: in the worker process (``LocalCore``) or in a child process (``CoreProcess``).

faust spends most of a core per worker in its own consumer and stream path (about 90 µs an event here), and
decoding plus windowing an event costs another 10-20 µs of Python. In the same process the two add up; with
``CoreProcess`` the worker process only batches raw message bytes into a pipe and the child decodes and
windows them on the machine's other core, so a worker keeps nearly the speed of a bare faust agent.

Both give the shell the same interface: ``submit`` a batch of messages, ``restore`` or ``drop`` partitions,
and ``await drain()`` for everything a flush must send. Requests reach the core in the order they were made.
If the child dies, ``drain`` raises ``CoreDied`` and the worker stops; nothing acknowledged is lost, because
acks follow only a successful drain and flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from streams.core import CoreOutput, Message, WindowCore
from streams.engine import ChangelogRecord, WindowConfig

log = logging.getLogger("tokenpulse.worker")


class CoreDied(RuntimeError):
    """The window core's process exited or failed; the worker must stop (its state is in the changelog)."""


class Core(Protocol):
    def submit(self, messages: list[Message]) -> None: ...
    def restore(self, partition: int, records: Sequence[ChangelogRecord]) -> None: ...
    def drop(self, partitions: Iterable[int]) -> None: ...
    async def drain(self) -> CoreOutput: ...
    def close(self) -> None: ...


class LocalCore:
    """The core in this process (tests, and ``--core local``)."""

    def __init__(self, core: WindowCore) -> None:
        self.core = core

    def submit(self, messages: list[Message]) -> None:
        self.core.apply(messages)

    def restore(self, partition: int, records: Sequence[ChangelogRecord]) -> None:
        self.core.restore(partition, records)

    def drop(self, partitions: Iterable[int]) -> None:
        self.core.drop(partitions)

    async def drain(self) -> CoreOutput:
        return self.core.drain()

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _Failure:
    traceback: str


class CoreProcess:
    """The core in a child process, fed through a pipe by one sender thread (so requests stay in order and
    the event loop never blocks on a full pipe) and answered through another pipe."""

    def __init__(self, config: WindowConfig, idle_close_s: float, log_level: int = logging.WARNING) -> None:
        context = multiprocessing.get_context("spawn")  # a clean interpreter: faust runs threads of its own
        request_reader, self._requests = context.Pipe(duplex=False)
        self._replies, reply_writer = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_serve,
            args=(request_reader, reply_writer, config, idle_close_s, log_level),
            name="tokenpulse-window-core",
            daemon=True,
        )
        self._process.start()
        request_reader.close()
        reply_writer.close()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="window-core-send")
        self._receiver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="window-core-recv")
        self._send_failed: BaseException | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _send(self, request: tuple[Any, ...]) -> Future[None]:
        future = self._sender.submit(self._requests.send, request)
        future.add_done_callback(self._note_failure)
        return future

    def _note_failure(self, future: Future[None]) -> None:
        if future.exception() is not None and self._send_failed is None:
            self._send_failed = future.exception()

    def submit(self, messages: list[Message]) -> None:
        self._send(("apply", messages))

    def restore(self, partition: int, records: Sequence[ChangelogRecord]) -> None:
        self._send(("restore", partition, list(records)))

    def drop(self, partitions: Iterable[int]) -> None:
        self._send(("drop", list(partitions)))

    async def drain(self) -> CoreOutput:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wrap_future(self._send(("drain",)))
            reply = await loop.run_in_executor(self._receiver, self._replies.recv)
        except (OSError, EOFError) as exc:
            raise CoreDied(f"the window core process exited ({self._process.exitcode=}): {exc!r}") from None
        if isinstance(reply, _Failure):
            raise CoreDied(f"the window core process failed:\n{reply.traceback}")
        if self._send_failed is not None:
            raise CoreDied(f"sending to the window core failed: {self._send_failed!r}")
        assert isinstance(reply, CoreOutput)
        return reply

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self._send(("stop",)).result(timeout=5)
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        self._sender.shutdown(wait=False)
        self._receiver.shutdown(wait=False)


def _serve(
    requests: Connection, replies: Connection, config: WindowConfig, idle_close_s: float, log_level: int
) -> None:
    """The child's loop: apply requests in order until ``stop`` or until the parent goes away (EOF)."""
    logging.basicConfig(level=log_level, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    core = WindowCore(config, idle_close_s)
    try:
        while True:
            try:
                request = requests.recv()
            except EOFError:
                return  # the worker process is gone (a SIGKILL, say): nothing here is acknowledged
            kind = request[0]
            if kind == "apply":
                core.apply(request[1])
            elif kind == "drain":
                replies.send(core.drain())
            elif kind == "restore":
                core.restore(request[1], request[2])
            elif kind == "drop":
                core.drop(request[1])
            elif kind == "stop":
                return
            else:
                raise ValueError(f"unknown request {kind!r}")
    except BaseException:
        replies.send(_Failure(traceback.format_exc()))
        raise
