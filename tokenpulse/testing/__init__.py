"""Test helpers that ship with the code: real-service fixtures and a fake clock."""

from tokenpulse.testing.clock import FakeClock
from tokenpulse.testing.services import InfluxEndpoint, RestartableService, ServiceProvider, ServiceUnavailable

__all__ = ["FakeClock", "InfluxEndpoint", "RestartableService", "ServiceProvider", "ServiceUnavailable"]
