# knm developer targets (GNU make). Override the interpreter with `make PYTHON=/path/to/python3.13`.

ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell if python3.13 -c 'import sys' >/dev/null 2>&1; then command -v python3.13; \
	else echo "$$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python"; fi)
endif
UV = $(PYTHON) -m uv

.PHONY: install test lint check demo bench

install:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --python $(PYTHON)

test: install
	$(UV) run --frozen pytest -q

lint: install
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy knm carriers tasks workers config
	$(UV) run --frozen python -m knm.tools.layout

# lint plus the unit tests (no server needed)
check: lint
	$(UV) run --frozen pytest -q tests/unit

demo: install
	$(UV) run --frozen knm demo

bench: install
	$(UV) run --frozen python -m benchmarks.run
