# Set-up and everyday targets. A GPU user overrides TORCH_SPEC, e.g.
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# test processes (pytest-xdist): most of the suite runs the CLI in fresh single-threaded
# interpreters, so two workers on a 2-core machine halve its wall time; TEST_WORKERS=0 runs it serially
TEST_WORKERS ?= 2
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test venv dev clean bench

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	touch $@

# Install the CPU build of torch first when no torch is present, so that the
# unpinned `torch>=2.4` in pyproject does not pull a multi-GB CUDA build.
$(VENV)/.torch: $(VENV)/.created
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml
	$(PIP) install -q -e ".[dev]"
	touch $(VENV)/.installed $@

venv: $(VENV)/.installed
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	$(VENV)/bin/dsrecon demo -o demo_output

test: $(VENV)/.dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# the maintained fast benchmarks, one thread each, one after the other (about a minute in all); each
# prints its table. The slow ones, their commands and times: benchmarks/README.md
BENCH_ENV := OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
bench: $(VENV)/.dev
	$(BENCH_ENV) $(PY) benchmarks/metrics_speed.py
	$(BENCH_ENV) $(PY) benchmarks/ssm_rollout.py
	$(BENCH_ENV) $(PY) benchmarks/speed.py --threads 1 --configs convssm --ensemble-configs convssm --epochs 3 \
	    --baseline-epochs 1 --ensemble 1 8 --ensemble-epochs 2
	$(BENCH_ENV) $(PY) benchmarks/analysis.py --quick

clean:
	rm -rf $(VENV) demo_output build *.egg-info
