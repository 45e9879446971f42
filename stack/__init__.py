"""The local real services: Apache Kafka (KRaft) and InfluxDB's ``influxd`` as native processes, or compose.

Other packages use the modules listed in ``__all__``; the rest are this package's own.
"""

__all__ = ["docker", "errors", "native"]
