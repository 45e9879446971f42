"""Sinks: InfluxDB writers, trend queries, and alerting (rules engine, alert state, notifiers).

Other packages use the modules listed in ``__all__``; the rest are this package's own.
"""

__all__ = ["cli", "influx_admin", "metrics", "notifiers", "rules", "runner", "trends"]
