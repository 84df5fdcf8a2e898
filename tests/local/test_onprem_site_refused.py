"""The local runtime does not model a real on-prem client site yet (docs/onprem.md, "Not yet"): it
says so plainly instead of failing on the missing client VPC."""

from __future__ import annotations

from pathlib import Path

import pytest

from regionha.errors import ConfigurationError
from regionha.local.runtime import LocalRuntime
from regionha.topology import load_topology

SITE_FILE = Path(__file__).resolve().parents[2] / "layers/regionha/regionha/topologies/onprem-site.yaml"


def test_the_local_runtime_refuses_an_onprem_site_plainly_until_it_models_one():
    with pytest.raises(ConfigurationError, match="does not run a real on-prem client site"):
        LocalRuntime(load_topology(SITE_FILE))
