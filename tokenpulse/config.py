"""Configuration: a YAML file plus ``TOKENPULSE_*`` environment variables, validated once by pydantic.

Precedence, highest first: environment variables, the YAML file (``--config`` or ``TOKENPULSE_CONFIG``),
the connection file of a running ``tokenpulse stack up``, built-in defaults. The rest of the code
receives a ``Settings`` object and never reads the environment itself.
"""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tokenpulse.errors import TokenpulseError
from tokenpulse.yamlfile import read_yaml_mapping


class ConfigError(TokenpulseError, ValueError):
    """Invalid configuration; the message names the field and the fix."""


def default_home() -> Path:
    """Where ``tokenpulse stack`` keeps data and its connection file."""
    return Path(os.environ.get("TOKENPULSE_HOME", Path.home() / ".local" / "share" / "tokenpulse"))


def default_cache() -> Path:
    """Where downloads and builds (Kafka jars, influxd) are cached."""
    return Path(os.environ.get("TOKENPULSE_CACHE", Path.home() / ".cache" / "tokenpulse"))


class Topics:
    """Topic names under a configurable prefix, so deployments can share a cluster."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}" if self.prefix else suffix

    @property
    def request_timings(self) -> str:
        return self._name("request-timings")

    @property
    def request_timings_dlq(self) -> str:
        return self._name("request-timings.dlq")

    @property
    def window_stats(self) -> str:
        return self._name("window-stats")

    @property
    def alerts(self) -> str:
        return self._name("alerts")

    @property
    def alert_state(self) -> str:
        """Compacted: the rule state of every alert key, read back by a restarted sink."""
        return self._name("alert-state")

    @property
    def sink_dlq(self) -> str:
        return self._name("influx-rejected.dlq")


KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class Settings(BaseSettings):
    """Connection settings shared by every command."""

    model_config = SettingsConfigDict(env_prefix="TOKENPULSE_", extra="ignore", case_sensitive=False)

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port] of the Kafka brokers")
    topic_prefix: str = Field("tokenpulse", description="prefix of every topic name")
    influx_url: str = Field("http://127.0.0.1:8086", description="InfluxDB 2.x base URL")
    influx_token: SecretStr = Field(SecretStr(""), description="InfluxDB API token")
    influx_org: str = "tokenpulse"
    influx_bucket: str = "tokenpulse"
    data_dir: Path = Field(default_factory=lambda: default_home() / "data", description="local state (spool, worker)")
    kafka_security_protocol: KafkaSecurityProtocol = Field("PLAINTEXT", description="how clients reach the brokers")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (SASL_PLAINTEXT, SASL_SSL)"
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(None, description="CA bundle (PEM) to verify the brokers; default: system")
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    kafka_ssl_keyfile: Path | None = Field(None, description="client private key (PEM) for mutual TLS")
    spool_max_bytes: int = Field(
        1 << 30,
        gt=0,
        description="the probe's spool bound (undelivered events); when full the probe stops with an error",
    )
    spool_fsync: bool = Field(
        True, description="fsync the spool on every group commit (false: survives a process crash, not a power cut)"
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_ports(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port; set TOKENPULSE_KAFKA_BOOTSTRAP=127.0.0.1:9092")
        return value

    @field_validator("influx_url")
    @classmethod
    def _url_has_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} needs http:// or https://; e.g. TOKENPULSE_INFLUX_URL=http://127.0.0.1:8086")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            missing = [
                f"TOKENPULSE_{name.upper()}"
                for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password")
                if not getattr(self, name)
            ]
            if missing:
                raise ValueError(f"kafka_security_protocol {protocol} needs {', '.join(missing)}")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("give both TOKENPULSE_KAFKA_SSL_CERTFILE and TOKENPULSE_KAFKA_SSL_KEYFILE, or neither")
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name} {str(path)!r} is not a readable file; fix TOKENPULSE_{name.upper()}")
        return self

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of every Kafka client (SSL, SASL_SSL), or ``None`` for plaintext protocols."""
        if self.kafka_security_protocol not in ("SSL", "SASL_SSL"):
            return None
        context = ssl.create_default_context(cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None)
        if self.kafka_ssl_certfile is not None:
            context.load_cert_chain(str(self.kafka_ssl_certfile), str(self.kafka_ssl_keyfile))
        return context

    def kafka_client_options(self) -> dict[str, Any]:
        """Security keyword arguments shared by kafka-python's and aiokafka's clients (same names in both):
        ``security_protocol``, ``ssl_context``, ``sasl_*``. Empty for PLAINTEXT, so defaults stay as they were.
        faust gets the same settings as ``broker_credentials`` (``streams.app.faust_credentials``)."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return {}
        options: dict[str, Any] = {"security_protocol": protocol}
        context = self.kafka_ssl_context()
        if context is not None:
            options["ssl_context"] = context
        if protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None  # checked by _kafka_security_complete
            options.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password.get_secret_value(),
            )
        return options

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables win over what load_settings() passes from YAML and the stack file.
        return env_settings, init_settings


def stack_connection(home: Path) -> dict[str, Any]:
    """Settings of a stack started by ``tokenpulse stack up`` under ``home``, if any."""
    try:
        state = json.loads((home / "stack.json").read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, Any] = {}
    if "kafka" in state:
        found["kafka_bootstrap"] = state["kafka"]["bootstrap"]
    if "influx" in state:
        influx = state["influx"]
        found.update(
            influx_url=influx["url"],
            influx_token=influx["token"],
            influx_org=influx["org"],
            influx_bucket=influx["bucket"],
        )
    return found


def load_settings(config_file: Path | None = None, home: Path | None = None) -> Settings:
    """Build ``Settings`` from the YAML file, the running stack and the environment."""
    values: dict[str, Any] = stack_connection(home or default_home())
    config_file = config_file or (Path(os.environ["TOKENPULSE_CONFIG"]) if "TOKENPULSE_CONFIG" in os.environ else None)
    if config_file is not None:
        loaded = read_yaml_mapping(config_file, "config file", ConfigError, "settings such as kafka_bootstrap")
        values.update(loaded)
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"setting {name!r}: {first['msg']} (set it in the config file or TOKENPULSE_{name.upper()})"
        ) from None
