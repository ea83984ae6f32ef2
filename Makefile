# Two commands: `make demo` runs the main job, `make test` runs the test suite.
# Both create (once) a project-local virtual environment in .venv; running them twice is safe.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean redis-server

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/kraken demo

test: $(STAMP) redis-server
	$(PY) -m pytest -q

# The log tests start their own redis-server (Debian's package); as root it is installed
# when missing, otherwise this says how.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq redis-server >/dev/null || \
	      { apt-get update -qq && apt-get install -y -qq redis-server; }; \
	  else \
	    echo "redis-server missing: sudo apt-get install -y redis-server (or brew install redis);" \
	         "the tests that need it skip without it (and fail under CI=true)"; \
	  fi; }

bench: $(STAMP)
	$(PY) benchmarks/table_ops.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
