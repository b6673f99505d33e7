# make demo: set up .venv, archive + restore samples/ with the shipped model, print the summary
#   and the checks to run before deleting originals (every file read back; every source held).
# make test: set up .venv, run the whole test suite (real local Ray, moto S3 server, CPU);
#   as root, it first installs the Debian packages some tests use (apt-get): chromium and
#   exiftool.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := demo-out

.PHONY: setup demo test lint system-packages

setup: $(VENV)/.installed

# torch first, pinned: pip takes the CPU wheel. A bare "torch" requirement pulls CUDA (GBs).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

demo: setup
	$(BIN)/tadm archive samples $(DEMO)/archive --verify
	$(BIN)/tadm restore $(DEMO)/archive $(DEMO)/restored
	$(BIN)/tadm inspect $(DEMO)/archive --check --source samples
	$(BIN)/tadm report $(DEMO)/archive $(DEMO)/report
	@echo "LR thumbnails: $(DEMO)/archive/lr/   restored images: $(DEMO)/restored/"
	@echo "report: open $(DEMO)/report/index.html in a browser"

test: setup system-packages
	$(BIN)/python -m pytest

# Debian packages of the tests, as package:program: headless Chromium opens tadm report's pages
# (tests/jobs/test_report.py); exiftool reads restored metadata independently of Pillow
# (tests/jobs/test_real_world.py). Those missing are installed when we are root (CI); elsewhere
# the tests that need them are skipped (they fail under CI=true).
SYSTEM_PACKAGES := chromium:/usr/bin/chromium libimage-exiftool-perl:/usr/bin/exiftool

system-packages:
	@missing=""; \
	for entry in $(SYSTEM_PACKAGES); do \
		[ -x "$${entry#*:}" ] || missing="$$missing $${entry%%:*}"; \
	done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# make bench: the full benchmark (R-D vs codecs, throughput, memory, sd21 cost) into $(BENCH_OUT).
# Without shipped tiny-x16/tiny-x32 checkpoints, name models: make bench BENCH_ARGS="--model DIR ..."
BENCH_OUT ?= benchmarks/results/latest
BENCH_ARGS ?=
.PHONY: bench
bench: setup
	$(BIN)/python -m pip install -e '.[bench]'
	$(BIN)/tadm bench --out $(BENCH_OUT) $(BENCH_ARGS)
