# Steer: `make demo` sets everything up and runs the demo; `make test` runs every test.
SHELL := /bin/bash
SWIFT ?= swift
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := libfaiss-dev librocksdb-dev libopenblas-dev pkg-config libgomp1 netcat-openbsd openssl nats-server libhdf5-dev

.PHONY: setup setup-system setup-python build release test test-swift test-python test-fuzz test-release demo doctor retrain clean

## setup: install system packages, Python tooling and resolve Swift packages (idempotent)
setup: setup-system setup-python
	$(SWIFT) package resolve

setup-system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	else echo "system packages present"; fi

setup-python:
	bash scripts/fetch-minilm.sh
	bash Tools/train/setup.sh
	$(PYTHON) -m pip install -q -r Benchmarks/datasets/requirements.txt

build:
	$(SWIFT) build

release:
	$(SWIFT) build -c release

## test: the whole suite, Swift and Python, a fixed-seed libFuzzer run on the request decoder, and the
## write-path harness against a release build
test: test-swift test-python test-fuzz test-release

test-swift:
	$(SWIFT) build --build-tests -Xswiftc -warnings-as-errors
	$(SWIFT) test --skip-build

## test-python: the trainer's tests, the Python client's, the reliability harnesses' short runs and the benchmark data tools' (which run the debug `steer` and `steer-bench` built by test-swift)
test-python:
	STEER_BIN=$(CURDIR)/.build/debug/steer $(PYTHON) -m pytest Tools/train/tests clients/python/tests Tests/reliability Benchmarks/datasets/tests Benchmarks/steer-bench/tests Benchmarks/compare/tests -q

## test-fuzz: libFuzzer on the request decoder (500 000 inputs) and on the write-log message decoder
## (200 000 inputs), from seed 1 (deterministic; builds .build-fuzz)
test-fuzz:
	bash Tests/Fuzz/run.sh --runs 500000
	bash Tests/Fuzz/run.sh --target writelog --runs 200000

## test-release: what ships is a release build, and -O once broke every write through `steer route --follow`
## while the debug suite passed: the short convergence run (routers and replicas writing through NATS,
## SIGKILL rounds) runs again against the release `steer`
test-release:
	$(SWIFT) build -c release --product steer
	STEER_BIN=$(CURDIR)/.build/release/steer $(PYTHON) -m pytest Tests/reliability/test_convergence.py -q

## demo: set up, build optimised, train the demo checkpoint, serve it and show prompted recommendations
demo: setup
	$(SWIFT) build -c release --product steer
	$(SWIFT) build -c release --product steer-index
	bash scripts/demo.sh

## retrain: the retraining loop against a live server (scripts/retrain.py; docs/operations.md), e.g.
##   make retrain ARGS="--server 127.0.0.1:7878 --token-file KEY --data DIR --live-checkpoint CKPT --checkpoint-root ROOT --work WORK"
retrain:
	$(PYTHON) scripts/retrain.py $(ARGS)

doctor: release
	.build/release/steer doctor

clean:
	rm -rf .build .build-fuzz demo-data
