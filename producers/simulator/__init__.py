"""The OpenAI-compatible provider simulator (a test and demo tool) with latency profiles and ground truth."""

from tokenpulse.producers.simulator.process import SimulatorProcess
from tokenpulse.producers.simulator.profiles import LatencyProfile, ProfileChange, SimulatorConfig, default_config
from tokenpulse.producers.simulator.server import GroundTruth, SimulatorServer, build_app, serve_forever

__all__ = [
    "GroundTruth",
    "LatencyProfile",
    "ProfileChange",
    "SimulatorConfig",
    "SimulatorProcess",
    "SimulatorServer",
    "build_app",
    "default_config",
    "serve_forever",
]
