"""Kafka cluster ids that StorageTool's command line accepts."""

from __future__ import annotations

import base64
import uuid

import pytest

from tokenpulse.stack import kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # encodes to "-A...": StorageTool would read it as an option
    plain = uuid.UUID(bytes=b"\x10" + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).startswith(b"-")
    drawn = iter([dashed, dashed, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    cluster_id = kafka._kafka_uuid()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cluster_id) == 22
