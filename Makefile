# Two commands do everything on a fresh machine:
#   make app    set up (idempotent) and start the app on http://localhost:8501 (offline Bach dataset)
#   make test   set up (idempotent, with test tools) and run the whole test suite
VENV ?= .venv
export LAPMUSIC_VENV := $(VENV)
PORT ?= 8501

.PHONY: app test setup setup-test clean

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

app: setup
	$(VENV)/bin/python -m streamlit run app.py --server.port $(PORT)

test: setup-test
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
