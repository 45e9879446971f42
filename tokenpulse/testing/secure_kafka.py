"""A private native Kafka broker with a SASL_SSL listener, for tests of the Kafka security settings.

The broker gets a certificate from a CA generated for the test (``trustme``), a SCRAM-SHA-512 user created
with Kafka's own ``StorageTool format --add-scram`` (KRaft keeps SCRAM credentials in its metadata log),
and two listeners: ``SASL_SSL`` for the clients under test and a loopback ``PLAINTEXT`` one for
inter-broker traffic and the readiness check. ``settings()`` gives the ``Settings`` a client needs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from tokenpulse.config import Settings
from tokenpulse.private_files import private_dir, write_private
from tokenpulse.stack.kafka import KafkaBroker, KafkaConfig, ensure_kafka_jars, require_java
from tokenpulse.stack.process import free_port

__all__ = ["SaslSslKafka"]

MECHANISM = "SCRAM-SHA-512"


class _ExplicitSettings(Settings):
    """``Settings`` validated from the given values only: a test's ``TOKENPULSE_*`` environment (pointing
    at the shared plaintext broker) must not win over the secure broker's settings."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@dataclass
class SaslSslKafka:
    """Start with ``start()``, stop with ``stop()``; ``bootstrap`` is the SASL_SSL listener."""

    home: Path
    cache: Path
    username: str = "tokenpulse-test"

    def __post_init__(self) -> None:
        self.password = secrets.token_urlsafe(18)
        self.sasl_port = free_port()
        self.broker: KafkaBroker | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ca_file(self) -> Path:
        return self.home / "ca.pem"

    def start(self) -> None:
        import trustme
        from cryptography.hazmat.primitives import serialization

        private_dir(self.home)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
        pkcs8 = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        chain = "".join(blob.bytes().decode() for blob in server.cert_chain_pems)
        keystore = self.home / "server-keystore.pem"
        write_private(keystore, pkcs8 + chain)
        write_private(self.ca_file, ca.cert_pem.bytes().decode())
        plain_port, controller_port = free_port(), free_port()
        cfg = KafkaConfig(
            data_dir=self.home / "kafka",
            port=plain_port,
            controller_port=controller_port,
            extra_properties=(
                f"listeners=PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{self.sasl_port},"
                f"CONTROLLER://127.0.0.1:{controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{self.sasl_port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
                f"sasl.enabled.mechanisms={MECHANISM}",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={keystore}",
                "ssl.client.auth=none",
            ),
            format_args=("--add-scram", f"{MECHANISM}=[name={self.username},password={self.password}]"),
        )
        self.broker = KafkaBroker(cfg, ensure_kafka_jars(self.cache), require_java())
        self.broker.start()
        self.broker.wait_ready()

    def settings(self, *, password: str | None = None, **overrides: Any) -> Settings:
        """Client settings for the SASL_SSL listener (``password`` to try a wrong one)."""
        values: dict[str, Any] = {
            "kafka_bootstrap": self.bootstrap,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": MECHANISM,
            "kafka_sasl_username": self.username,
            "kafka_sasl_password": SecretStr(password if password is not None else self.password),
            "kafka_ssl_cafile": self.ca_file,
        }
        values.update(overrides)
        return _ExplicitSettings(**values)

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.process.stop()
            self.broker = None
