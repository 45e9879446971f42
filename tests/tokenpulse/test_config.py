"""Settings: precedence of environment, YAML file and the running stack's connection file; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokenpulse.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "KAFKA_BOOTSTRAP",
        "INFLUX_URL",
        "INFLUX_TOKEN",
        "INFLUX_ORG",
        "INFLUX_BUCKET",
        "TOPIC_PREFIX",
        "CONFIG",
    ):
        monkeypatch.delenv(f"TOKENPULSE_{name}", raising=False)


def write_stack(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "stack.json").write_text(
        json.dumps(
            {
                "kafka": {"bootstrap": "127.0.0.1:1111"},
                "influx": {"url": "http://127.0.0.1:2222", "token": "stack-token", "org": "o", "bucket": "b"},
            }
        )
    )


def test_environment_beats_yaml_beats_stack_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_stack(tmp_path / "home")
    settings = load_settings(home=tmp_path / "home")
    assert settings.kafka_bootstrap == "127.0.0.1:1111"
    assert settings.influx_token.get_secret_value() == "stack-token"

    config = tmp_path / "tokenpulse.yaml"
    config.write_text("kafka_bootstrap: 10.0.0.1:9092\ntopic_prefix: staging\n")
    settings = load_settings(config, home=tmp_path / "home")
    assert settings.kafka_bootstrap == "10.0.0.1:9092"
    assert settings.topics.request_timings == "staging.request-timings"
    assert settings.influx_url == "http://127.0.0.1:2222"

    monkeypatch.setenv("TOKENPULSE_KAFKA_BOOTSTRAP", "broker:9093")
    assert load_settings(config, home=tmp_path / "home").kafka_bootstrap == "broker:9093"


def test_topic_names_follow_the_contract(tmp_path: Path) -> None:
    topics = load_settings(home=tmp_path).topics
    assert (topics.request_timings, topics.request_timings_dlq, topics.window_stats, topics.alerts) == (
        "tokenpulse.request-timings",
        "tokenpulse.request-timings.dlq",
        "tokenpulse.window-stats",
        "tokenpulse.alerts",
    )


def test_bad_value_names_the_setting_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENPULSE_KAFKA_BOOTSTRAP", "no-port-here")
    with pytest.raises(ConfigError, match=r"kafka_bootstrap.*host:port.*TOKENPULSE_KAFKA_BOOTSTRAP"):
        load_settings(home=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [("kafka_bootstrap: [unclosed", "not valid YAML"), ("- a\n- list\n", "must be a mapping with settings")],
)
def test_bad_yaml_file_is_named(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(config, home=tmp_path)
    assert str(config) in str(info.value)


def test_token_is_not_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENPULSE_INFLUX_TOKEN", "very-secret-token-value")
    settings = load_settings(home=tmp_path)
    assert "very-secret-token-value" not in repr(settings)
    assert "very-secret-token-value" not in str(settings.model_dump())
