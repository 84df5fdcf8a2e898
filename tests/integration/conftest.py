"""Every integration test module runs in a network namespace of its own that holds only loopback.

A LocalRuntime makes (and deletes) its own namespace; the parts tested on their own here (named,
the moto server, lo addresses and tc cuts, subprocesses) get one per module from this fixture, so
no test can send a packet off the machine and pytest-xdist workers never share loopback addresses,
port 53 or the qdisc on lo. Modules stay whole on one worker (``--dist loadfile``), since some keep
one runtime for all their tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module", autouse=True)
def sealed_namespace() -> Iterator[str | None]:
    if os.geteuid() != 0:  # the tests are skipped (tests/conftest.py); nothing to seal
        yield None
        return
    from regionha.local.host import netns

    with netns.Namespace() as ns:
        yield ns.name
    mine = [n for n in netns.namespaces() if n.startswith(f"{netns.PREFIX}{os.getpid()}-")]
    assert not mine, f"namespaces left behind by this module: {mine}"
