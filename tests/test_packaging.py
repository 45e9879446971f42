"""The distribution installs one import package, ``tokenpulse``, and works from a regular (non-editable) wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("schemas", "producers", "streams", "sinks", "stack")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("tokenpulse-*.whl")
    return found


def test_wheel_has_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = next(n for n in names if n.endswith("top_level.txt"))
        assert archive.read(top_level).decode().split() == ["tokenpulse"]
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"tokenpulse"}
    for component in COMPONENTS:
        assert f"tokenpulse/{component}/__init__.py" in names
    assert "tokenpulse/sinks/queries/daily_latency.flux" in names
    assert "tokenpulse/stack/kafka/pom.xml" in names


def test_installed_wheel_imports_and_runs_from_another_directory(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    installed = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")} - {"bin"}  # bin: the script
    assert installed == {"tokenpulse"}
    env = dict(os.environ, PYTHONPATH=str(target))
    code = "import tokenpulse, tokenpulse.streams, tokenpulse.sinks.rules; print(tokenpulse.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert where.stdout.decode().strip().startswith(str(target))
    for component in COMPONENTS:
        missing = subprocess.run(
            [sys.executable, "-c", f"import {component}"], cwd=tmp_path, env=env, capture_output=True
        )
        assert missing.returncode != 0, f"a top-level {component!r} is importable"
    demo = subprocess.run(
        [sys.executable, "-m", "tokenpulse", "demo", "--help"], cwd=tmp_path, env=env, capture_output=True, check=True
    )
    assert b"demo" in demo.stdout
