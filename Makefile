# Two commands do everything on a fresh machine:
#   make app    set up (idempotent) and start the app on http://localhost:8501 (offline Bach dataset)
#   make test   set up (idempotent, with test tools), lint (ruff) and run the whole test suite (the layer
#               contract of pyproject.toml included)
#   make gpu-check  on a machine with an NVIDIA GPU: CUDA tests and benchmarks into gpu_check.md
#   make bench  the performance table (training frames/s, 1 and 2 threads, peak memory; JSB: needs the network or
#               LAPMUSIC_DATA_DIR; BENCH_ARGS="--repeats 5" for more runs), about 5 minutes on 2 cores
# The environment's LAPMUSIC_VENV counts too (make VENV=... wins over it).
VENV ?= $(or $(LAPMUSIC_VENV),.venv)
export LAPMUSIC_VENV := $(VENV)
PORT ?= 8501

.PHONY: app test setup setup-test gpu-check bench clean

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

bench: setup
	$(VENV)/bin/python benchmarks/bench_table.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
