"""tokenpulse: continuous latency, throughput, error and cost telemetry for LLM inference endpoints.

Layers, bottom to top (README, "Layers"; checked by ``lint-imports``): the ground (``config``, ``errors``,
``topics``, ``durations``, ``yamlfile``, ``retry``, ``formatting``, ``metrics``), ``schemas``, the I/O
components ``producers``, ``streams``, ``sinks`` and ``stack``, and the app (``cli``, ``demo``).
``tokenpulse.testing`` is for tests and benchmarks only.
"""

__all__ = ["cli", "config", "errors", "producers", "schemas", "sinks", "stack", "streams"]
