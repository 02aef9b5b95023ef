# Two commands do all the set-up on a fresh machine (Python >= 3.10 on PATH as python3):
#   make demo   - install into .venv, then run the demo on built-in synthetic cells
#   make test   - install into .venv, then lint and run the whole test suite on JAX and PyTorch
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch, pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: demo test install conformance

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[all]"
	touch $@

demo: install
	$(VENV)/bin/lacss demo

test: install
	PYTHON=$(PY) scripts/test

conformance: install
	$(PY) -m lacss_core.conformance
