# Two commands do everything on a fresh machine:
#   make app    set up (idempotent) and start the app on http://localhost:8501 (offline Bach dataset)
#   make test   set up (idempotent, with test tools), lint (ruff) and run the whole test suite (the layer
#               contract of pyproject.toml included)
#   make gpu-check  on a machine with an NVIDIA GPU: CUDA tests and benchmarks into gpu_check.md
# The environment's LAPMUSIC_VENV counts too (make VENV=... wins over it).
VENV ?= $(or $(LAPMUSIC_VENV),.venv)
export LAPMUSIC_VENV := $(VENV)
PORT ?= 8501

.PHONY: app test setup setup-test gpu-check clean

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

app: setup
	$(VENV)/bin/python -m streamlit run app.py --server.port $(PORT)

test: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

gpu-check:
	scripts/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache
