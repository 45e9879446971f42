"""Fixtures of the producer tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tokenpulse.producers.kernel_time import ANCILLARY_SIZE, enable_receive_timestamps, kernel_arrival_ns


@pytest.fixture
def kernel_stamping() -> Iterator[None]:
    """Wait until the kernel stamps received packets, and keep it stamping for the test.

    Linux switches receive stamping on for the whole host a moment after the first socket asks (a deferred
    work item), and off when the last one closes; a test that checks a kernel stamp needs it on first.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    enable_receive_timestamps(server)
    try:
        for _ in range(1000):
            client.sendall(b"x")
            _data, ancillary, _flags, _address = server.recvmsg(16, ANCILLARY_SIZE)
            if kernel_arrival_ns(ancillary) is not None:
                break
            time.sleep(0.001)
        else:
            pytest.fail("the kernel never stamped a received packet (SO_TIMESTAMPNS)")
        yield
    finally:
        for sock in (client, server, listener):
            sock.close()
