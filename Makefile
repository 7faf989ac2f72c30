# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test install bench clean

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

clean:
	rm -rf $(DEMO_OUT) bench_out .pytest_cache
