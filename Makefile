# The two front doors: `make demo` (the whole product locally) and `make test` (the suite).
VENV ?= .venv
export SAM_CLI_TELEMETRY = 0
export AWS_EC2_METADATA_DISABLED = true

.PHONY: setup demo up test lint bench clean

setup:
	@VENV=$(VENV) scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/regionha local demo --report-json out/demo-report.json

up: setup
	$(VENV)/bin/regionha local up --state-file out/local-state.json

# As root the suite runs in a network namespace holding only loopback: it needs no network after
# `make setup` and nothing it starts can send a packet off the machine. Every local runtime (and every
# integration test module) makes a namespace of its own inside, so the integration tests run in
# parallel with the unit tests; a module stays on one worker (--dist loadfile). The demo's own tests
# (marker `serial`) run after, alone.
SEALED = $(if $(filter 0,$(shell id -u)),unshare --net sh -c 'ip link set lo up && exec "$$@"' sealed,)

test: setup
	$(VENV)/bin/ruff check .
	$(SEALED) $(VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m 'not serial'
	$(SEALED) $(VENV)/bin/python -m pytest -q -p no:xdist -m serial

bench: setup
	$(VENV)/bin/python benchmarks/demo_time.py

clean:
	rm -rf .aws-sam out
