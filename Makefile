# flexllm — every task a new user or CI needs, on a machine that has never seen the project.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
# the suite also runs the integrations against real engines (Ray actors) and a real third-party proxy
# (LiteLLM, offline), so it installs their extras
TEST_EXTRAS ?= dev,ray,proxy-tests
TEST_STAMP  := $(VENV)/.installed-test

.PHONY: install test demo bench bench-quick lint clean redis-server

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) setup.cfg setup.py pyproject.toml
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[$(TEST_EXTRAS)]"
	touch $(TEST_STAMP)

install: $(STAMP)  ## create .venv and install flexllm with its test tools

# the shared rate-budget tests start a real redis-server (CI runs as root: install it when missing)
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; }

test: $(TEST_STAMP) redis-server  ## run the test suite (what CI runs); pytest's exit 5 (no tests collected) is not a failure
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

demo: $(STAMP)  ## a real batch against the built-in mock server: progress, output file, resume
	$(PY) -m flexllm.demo

bench: $(STAMP)  ## benchmarks, with raw httpx and upstream flexllm 0.17.10 baselines measured in the same run
	$(PY) benchmarks/run_all.py

bench-quick: $(STAMP)  ## the same benchmarks with smaller workloads (about a minute)
	BENCH_QUICK=1 $(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check flexllm tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info demo-output
