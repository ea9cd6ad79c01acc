# Two entry points: `make demo` (pretrain on real Fashion-MNIST, reconstruct, print where everything is)
# and `make test` (ruff, then pytest). Each sets up what it needs: a virtual environment with maekit installed, and the
# Debian package dataset-fashion-mnist when the data are not found.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST ?= /usr/share/datasets/fashion-mnist
DEMO_OUT ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup data browser demo lint test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,physics]'
	touch $@

data:
	@if [ -n "$$MAEKIT_DATA" ] || [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: found"; \
	else \
	  echo "Fashion-MNIST not found: installing the Debian package dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

# headless Chromium for the report test (tests/test_report.py opens report.html in it)
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "Chromium and chromedriver: found"; \
	else \
	  echo "Chromium not found: installing the Debian packages chromium and chromium-driver"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; \
	fi

demo: setup data
	$(PY) -m maekit pretrain -c configs/fashion_mnist.yaml out=$(DEMO_OUT)
	$(PY) -m maekit reconstruct $(DEMO_OUT) --split train
	$(PY) -m maekit reconstruct $(DEMO_OUT) --split test
	@echo "demo run directory: $(DEMO_OUT)"
	$(PY) -m maekit report $(DEMO_OUT)

# ruff (installed by the test extra; configured in pyproject.toml): lint, then the formatter's check
lint: setup
	$(PY) -m ruff check maekit tests benchmarks
	$(PY) -m ruff format --check maekit tests benchmarks

test: lint data browser
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs
