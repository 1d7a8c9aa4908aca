# The two commands: `make bench` (the main job) and `make test` (the whole suite).
# Both build .venv from requirements.txt on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: bench test env clean

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	touch $(STAMP)

env: $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/mesh-decoder bench

test: $(STAMP)
	MESH_DECODER_QUICK=1 $(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
