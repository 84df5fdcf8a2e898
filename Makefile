# The two front doors: `make demo` (the whole product locally) and `make test` (the suite).
VENV ?= .venv
export SAM_CLI_TELEMETRY = 0
export AWS_EC2_METADATA_DISABLED = true

.PHONY: setup demo up test lint bench clean

setup:
	@VENV=$(VENV) scripts/bootstrap.sh

demo: setup
	$(VENV)/bin/regionha local demo --json out/demo-report.json

up: setup
	$(VENV)/bin/regionha local up --state-file out/local-state.json

# Unit and template tests on both cores; the local-runtime integration tests one at a time (they
# share loopback addresses, port 53 and the tc qdisc on lo).
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q -n 2 -m "not integration"
	$(VENV)/bin/python -m pytest -q -m integration

bench: setup
	$(VENV)/bin/python benchmarks/demo_time.py

clean:
	rm -rf .aws-sam out
