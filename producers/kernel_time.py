"""The kernel's receive timestamps of TCP bytes, on the monotonic clock.

With ``SO_TIMESTAMPNS`` set on a socket, Linux attaches to every ``recvmsg`` the time the last packet of
the bytes read entered the host's network stack. That is when the bytes arrived, however late the event
loop got round to them, so both the probe (``producers.adapters.wire``) and the simulator's ground truth
(``producers.simulator.transport``) stamp with it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from time import monotonic_ns, time_ns

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux's option (and control message type) for nanosecond receive timestamps; Python does not name it."""
_TIMESPEC = struct.Struct("@ll")  # struct timespec: seconds, nanoseconds
ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
"""The ``ancbufsize`` for ``recvmsg`` that holds one timestamp."""
_MAX_AGE_NS = 10 * 1_000_000_000  # a stamp older than this means the wall clock was stepped
_TIGHT_NS = 2_000  # readings this tight were not interrupted (p99.9 here: 0.27 us; p99.99: 14 us)


def enable_receive_timestamps(sock: socket.socket) -> None:
    """Ask the kernel to stamp what ``sock`` receives (a no-op where it cannot: not TCP/IP, not Linux)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # then every read falls back to the reader's own time
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def kernel_arrival_ns(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """Monotonic time the kernel stamped on the bytes of one ``recvmsg``, or ``None`` if it gave none.

    The kernel stamps on the wall clock (see ``wall_to_monotonic_ns``). A stamp from the future or from
    more than ten seconds ago means the wall clock was stepped in between, and is not used. Linux turns
    stamping on for the whole host shortly after the first socket asks (a deferred work item), so the
    first packets after that may come without one.
    """
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            offset, now = wall_to_monotonic_ns()
            arrived: int = seconds * 1_000_000_000 + nanoseconds + offset
            if now - _MAX_AGE_NS <= arrived <= now:
                return arrived
    return None


def wall_to_monotonic_ns() -> tuple[int, int]:
    """``(offset, now)``: add ``offset`` to a wall-clock time to put it on the monotonic clock; ``now`` is
    the monotonic time of the reading.

    The wall clock is read between two monotonic readings, so the offset is off by at most half their
    distance. That is tens of nanoseconds, unless the process was preempted in between, which would move
    the offset by up to half the preemption: a reading wider than ``_TIGHT_NS`` is taken again (up to four
    times, keeping the tightest).
    """
    best_gap = best_offset = now = 0
    for attempt in range(4):
        before = monotonic_ns()
        wall = time_ns()
        after = monotonic_ns()
        gap = after - before
        if attempt == 0 or gap < best_gap:
            best_gap, best_offset, now = gap, (before + after) // 2 - wall, after
        if gap <= _TIGHT_NS:
            break
    return best_offset, now
