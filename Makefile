# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv, install tokenpulse, fetch Kafka's jars, build influxd and llama.cpp's llama-server
# (and assemble its Gemma 3 270M model) on first use
# (cached in ~/.cache/tokenpulse), and reuse everything after that.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint pytest drills bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed
	$(BIN)/tokenpulse stack install --with-llm

demo: setup
	$(BIN)/tokenpulse demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: setup
	$(BIN)/pytest

test: lint pytest

# Only the fault drills (they also run in `make test`): SIGKILLed services, adversarial clocks, bad spool disks.
drills: setup
	$(BIN)/pytest -m faults -s

# Every benchmark against the local stack (started if needed); each prints its own baseline and ratios.
bench: setup
	$(BIN)/tokenpulse stack up >/dev/null
	eval "$$($(BIN)/tokenpulse stack env)" && for script in bench/*.py; do \
	  case $$script in *_common.py) continue ;; esac; \
	  echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
