# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test install bench gpu-check clean

# constraints.txt pins every package to the tested version; pyproject.toml holds the supported ranges.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[decord,bench,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/avssl demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -ra tests

bench: $(STAMP)
	$(VENV)/bin/avssl bench data
	$(VENV)/bin/avssl bench prep

# On a machine with a CUDA GPU (fails at once without one): the cuda-marked tests, bench models and cma at
# AudioSet size, one bf16 avid_cma epoch; one table, written to docs/results/gpu.md (budget: under 8 minutes).
# The GPU is looked for before anything is installed, so that a machine without one stops at once.
gpu-check:
	@nvidia-smi -L >/dev/null 2>&1 || { echo "make gpu-check needs a CUDA GPU: nvidia-smi lists none" >&2; exit 2; }
	$(MAKE) install
	$(VENV)/bin/avssl bench gpu --page docs/results/gpu.md

clean:
	rm -rf $(DEMO_OUT) bench_out .pytest_cache
