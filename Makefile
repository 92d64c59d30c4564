# The two commands a new user copies (see README): `make demo` and `make test`.
# Everything installs into a project-local virtual environment, .venv/.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned to releases that install from this machine's local disk; any >=2.4 works elsewhere.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-quick clean

$(BIN)/prunekit: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,bench,hf]'
	touch $(BIN)/prunekit

install: $(BIN)/prunekit

demo: install
	$(BIN)/prunekit demo --out runs/demo

test: install
	$(BIN)/lint-imports --no-cache   # the layer contract in pyproject.toml: imports only point down the pipeline
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-quick: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

clean:
	rm -rf $(VENV) runs build *.egg-info
