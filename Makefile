# posture-daemon — the two commands a new user needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test soak bench lint format docs system-deps image-check clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## Run the daemon on the embedded demo estate (simulated AWS, no credentials); metrics on :9717.
demo: $(STAMP)
	$(BIN)/posture-daemon demo

## Debian's Prometheus and Alertmanager binaries (promtool, amtool) for the end-to-end tests.
system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || \
		! command -v prometheus-alertmanager >/dev/null || ! command -v amtool >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			prometheus prometheus-alertmanager >/dev/null; \
	fi

## The whole test suite: unit, integration (moto server over HTTP), end-to-end.
test: $(STAMP) system-deps
	$(BIN)/python -m pytest

## The soak: 500 sweeps of the demo estate with churn; RSS and series counts (tens of minutes).
soak: $(STAMP)
	$(BIN)/python -m pytest -m slow tests/soak -s

## The scale benchmark: 20 accounts x 3 regions x 100 functions in moto (see README, Scale).
bench: $(STAMP)
	$(BIN)/python bench/scale.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format daemon tests bench
	$(BIN)/ruff check --fix daemon tests bench

## Regenerate docs/*.md, deploy/iam and the Helm chart's generated files from the code.
docs: $(STAMP)
	$(BIN)/python -m daemon.docs

## Opt-in, not CI (root, buildah, podman, debootstrap): build the image from the Dockerfile
## without Docker or a registry and run it on a read-only root filesystem.
image-check:
	deploy/docker/image-check.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
