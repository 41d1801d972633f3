# knm developer targets (GNU make). Override the interpreter with `make PYTHON=/path/to/python3.13`.

ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell if python3.13 -c 'import sys' >/dev/null 2>&1; then command -v python3.13; \
	else echo "$$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python"; fi)
endif
UV = $(PYTHON) -m uv

.PHONY: install check test lint demo bench

install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --python $(PYTHON)

# the fast tier: lint and the unit tests, no server started (under a minute)
check: lint
	KNM_TEST_NO_SERVERS=1 $(UV) run --frozen pytest -q tests/unit

# everything: unit and integration tests over real servers, benchmark smoke runs (what CI runs)
test: install
	$(UV) run --frozen pytest -q

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy knm carriers tasks workers config
	$(UV) run --frozen python -m knm.tools.layout

demo: install
	$(UV) run --frozen knm demo

bench: install
	$(UV) run --frozen python -m benchmarks.run
