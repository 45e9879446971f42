"""Workload files: valid examples load; mistakes are reported with the field and the fix."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import SecretStr

from tokenpulse.producers.errors import WorkloadError
from tokenpulse.producers.probe import resolve_api_keys
from tokenpulse.producers.workload import load_prompts, load_workload, parse_workload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workloads"


def minimal(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "name": "w",
        "endpoints": [{"name": "e", "kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}],
        "prompts": {"inline": ["hello"]},
        "requests": 3,
    }
    document.update(overrides)
    return document


@pytest.mark.parametrize("name", ["simulator.yaml", "groq-and-cerebras.yaml", "reasoning-models.yaml"])
def test_examples_are_valid(name: str) -> None:
    workload = load_workload(EXAMPLES / name)
    assert workload.endpoints and load_prompts(workload.prompts)


def test_defaults() -> None:
    workload = parse_workload(minimal())
    assert workload.schedule.kind == "closed" and workload.warmup_requests == 0
    assert workload.timeouts.first_token_s == 60.0


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        (
            {"endpoints": [{"name": "e", "kind": "grpc", "base_url": "http://h/v1", "model": "m"}]},
            "endpoints.0.kind",
            "openai",
        ),
        (
            {"endpoints": [{"name": "e", "kind": "openai", "base_url": "h/v1", "model": "m"}]},
            "endpoints.0.base_url",
            "API root",
        ),
        ({"schedule": {"kind": "open", "rate_per_s": 0}}, "rate_per_s", "requests per second"),
        ({"schedule": {"kind": "closed", "concurrency": 0}}, "concurrency", ">= 1"),
        ({"prompts": {}}, "prompts", "inline"),
        ({"requests": None}, "(top level)", None),
        (
            {
                "endpoints": [
                    {"name": "e", "kind": "openai", "base_url": "http://h/v1", "model": "m", "api_key": "sk-secret"}
                ]
            },
            "endpoints.0.api_key",
            None,
        ),
        (
            {
                "endpoints": [
                    {"name": "e", "kind": "openai", "base_url": "http://h/v1", "model": "m", "api_key_env": "not a var"}
                ]
            },
            "endpoints.0.api_key_env",
            "environment variable",
        ),
        (
            {
                "endpoints": [
                    {
                        "name": "e",
                        "kind": "openai",
                        "base_url": "http://h/v1",
                        "model": "m",
                        "prices": [{"input_per_mtok": 1, "output_per_mtok": 1}],
                    }
                ]
            },
            "prices.0.effective_from",
            "effective_from",
        ),
    ],
)
def test_errors_name_the_field_and_the_fix(change: dict[str, object], field: str, fix: str | None) -> None:
    with pytest.raises(WorkloadError) as info:
        parse_workload(minimal(**change), source="w.yaml")
    message = str(info.value)
    assert message.startswith("w.yaml: field ")
    assert field in message
    if fix is not None:
        assert "fix:" in message and fix in message


def test_never_ending_workload_is_rejected() -> None:
    with pytest.raises(WorkloadError, match="requests or duration_s"):
        parse_workload(minimal(requests=None))


def test_secret_in_the_file_is_rejected_without_echoing_it() -> None:
    document = minimal(
        endpoints=[
            {"name": "e", "kind": "openai", "base_url": "http://h/v1", "model": "m", "api_key": "sk-do-not-echo"}
        ]
    )
    with pytest.raises(WorkloadError) as info:
        parse_workload(document)
    assert "sk-do-not-echo" not in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="cannot read"):
        load_workload(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(WorkloadError, match="not valid YAML"):
        load_workload(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(WorkloadError, match="must be a mapping"):
        load_workload(scalar)


def test_prices_follow_their_effective_dates() -> None:
    prices = [
        {"effective_from": "2025-01-01", "input_per_mtok": 1, "output_per_mtok": 2},
        {"effective_from": "2026-03-01", "input_per_mtok": 0.5, "output_per_mtok": 1},
    ]
    spec = {"name": "e", "kind": "openai", "base_url": "http://h/v1", "model": "m", "prices": prices}
    endpoint = parse_workload(minimal(endpoints=[spec])).endpoints[0]
    assert endpoint.prices_on(dt.date(2024, 12, 31)).input_per_mtok == 0.0
    assert endpoint.prices_on(dt.date(2025, 6, 1)).output_per_mtok == 2.0
    assert endpoint.prices_on(dt.date(2026, 3, 1)).input_per_mtok == 0.5


def test_prompts_from_jsonl_relative_to_the_workload(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(
        '{"id": "a", "prompt": "hi", "max_tokens": 5}\n\n{"messages": [{"role": "user", "content": "yo"}]}\n'
    )
    (tmp_path / "w.yaml").write_text(
        "name: w\nrequests: 1\nprompts: {file: p.jsonl}\n"
        "endpoints: [{name: e, kind: openai, base_url: 'http://h/v1', model: m}]\n"
    )
    prompts = load_prompts(load_workload(tmp_path / "w.yaml").prompts)
    assert [(p.id, p.text, p.max_tokens) for p in prompts] == [("a", "hi", 5), ("line3", "yo", None)]


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"id": "a", "prompt": "hi"}\nnot json\n')
    workload = parse_workload(minimal(prompts={"file": str(tmp_path / "p.jsonl")}))
    with pytest.raises(WorkloadError, match="line 2"):
        load_prompts(workload.prompts)


def test_synthetic_prompts_are_deterministic() -> None:
    spec = {"synthetic": {"count": 3, "input_tokens": 50, "output_tokens": 9, "seed": 1}}
    first = load_prompts(parse_workload(minimal(prompts=spec)).prompts)
    again = load_prompts(parse_workload(minimal(prompts=spec)).prompts)
    assert first == again and len(first) == 3
    assert len(first[0].text.split()) == 50 and first[0].max_tokens == 9


def test_api_keys_come_from_the_named_environment_variable() -> None:
    workload = parse_workload(
        minimal(
            endpoints=[
                {"name": "e", "kind": "openai", "base_url": "http://h/v1", "model": "m", "api_key_env": "MY_KEY"}
            ]
        )
    )
    keys = resolve_api_keys(workload, {"MY_KEY": "sk-abc"})
    assert isinstance(keys["e"], SecretStr) and "sk-abc" not in repr(keys)
    with pytest.raises(WorkloadError, match="MY_KEY is not set"):
        resolve_api_keys(workload, {})
