#!/usr/bin/env bash
# Install what regionha needs on a fresh Debian machine: system packages (BIND, iproute2, strace,
# venv) when we are root, then a virtualenv with regionha and its dev tools, then the wheelhouse of
# the Lambda layer. The only step that needs the network (apt and PyPI); afterwards `make test` and
# `make demo` run with no network at all. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v named >/dev/null 2>&1 || need_apt+=(bind9)
command -v named-checkconf >/dev/null 2>&1 || need_apt+=(bind9-utils)
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v tc >/dev/null 2>&1 || need_apt+=(iproute2)
command -v make >/dev/null 2>&1 || need_apt+=(make)
# Only tests/unit/test_drill_report_browser.py needs it (it renders the drill report page).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)  # the sealed-trace test
"$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)

if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: missing system packages: ${need_apt[*]}" >&2
    echo "bootstrap: run as root on Debian/Ubuntu, or: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

if [[ ! -x $VENV/bin/python ]]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp=$VENV/.regionha-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "bootstrap: pip install -e .[dev] (first time takes a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
  touch "$stamp"
fi

# The SAM CLI in an environment of its own: aws-sam-cli pins an exact boto3 older than the one
# regionha needs (PutMetricAlarm's WarmUpConfiguration), so one environment cannot hold both.
# Linked into $VENV/bin, where the tests and `make` look for `sam`.
SAM_VENV=${SAM_VENV:-.venv-sam}
if [[ ! -x $SAM_VENV/bin/sam ]]; then
  echo "bootstrap: pip install aws-sam-cli into $SAM_VENV"
  "$PYTHON" -m venv "$SAM_VENV"
  "$SAM_VENV/bin/python" -m pip install --quiet --upgrade pip
  "$SAM_VENV/bin/python" -m pip install --quiet 'aws-sam-cli>=1.120'
fi
ln -sf "$(cd "$SAM_VENV" && pwd)/bin/sam" "$VENV/bin/sam"

# The wheels the Lambda layer is built from (python3.13, manylinux2014_x86_64, as PYVER and PLATFORM
# in layers/regionha/Makefile), so that `sam build` (and its test) need no registry after setup.
WHEELHOUSE=${WHEELHOUSE:-.wheelhouse}
wheel_stamp=$WHEELHOUSE/.complete
if [[ ! -f $wheel_stamp || layers/regionha/requirements.txt -nt $wheel_stamp ]]; then
  echo "bootstrap: pip download the Lambda layer's wheels into $WHEELHOUSE"
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --dest "$WHEELHOUSE" \
    --python-version 3.13 --implementation cp --only-binary=:all: --platform manylinux2014_x86_64 \
    -r layers/regionha/requirements.txt
  touch "$wheel_stamp"
fi
