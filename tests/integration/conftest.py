"""Every integration test module runs in a network namespace of its own that holds only loopback.

A LocalRuntime makes (and deletes) its own namespace; the parts tested on their own here (named,
the moto server, lo addresses and tc cuts, subprocesses) get one per module from this fixture, so
no test can send a packet off the machine and pytest-xdist workers never share loopback addresses,
port 53 or the qdisc on lo. Modules stay whole on one worker (``--dist loadfile``), since some keep
one runtime for all their tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

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


@pytest.fixture(scope="module")
def start_runtime() -> Iterator[Callable[..., Any]]:
    """``start_runtime(topology=None, *, build=True, settle=False)``: a LocalRuntime of ``topology`` (the
    default topology when None) at 20x, started in this process (so inside the module's sealed namespace,
    in a namespace of its own), built (asserting SUCCEEDED) and settled as asked; stopped at the module's
    end, whether its build passed or not."""
    from regionha.local.runtime import LocalRuntime, local_topology
    from regionha.topology import load_topology

    started: list[LocalRuntime] = []

    def start(topology: Any = None, *, build: bool = True, settle: bool = False) -> LocalRuntime:
        rt = LocalRuntime(local_topology(topology if topology is not None else load_topology()), compression=20.0)
        rt.start()
        started.append(rt)
        if build:
            execution = rt.build()
            assert execution.status == "SUCCEEDED", execution.to_json()
        if settle:
            rt.settle()
        return rt

    try:
        yield start
    finally:
        for rt in reversed(started):
            rt.stop()
