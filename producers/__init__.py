"""Producers: workloads, provider adapters, the timing probe, the Kafka publisher and its spool, the simulator.

Other packages use the modules listed in ``__all__``; the rest are this package's own.
"""

__all__ = ["cli", "metrics", "probe", "report", "simulator", "workload"]
