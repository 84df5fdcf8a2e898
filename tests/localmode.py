"""Local mode for tests that probe loopback stand-ins in-process: ``netguard.LOCAL_ENV`` set and
the socket guard installed (left installed when it already was), so every probe is mapped to and held
on loopback (regionha.netguard).

Use it as an autouse fixture by importing it into the test module:
``from localmode import local_mode  # noqa: F401 - autouse fixture``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from regionha import netguard


@pytest.fixture(autouse=True)
def local_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(netguard.LOCAL_ENV, "1")
    installed_here = not netguard.socket_guard_installed()
    netguard.install_socket_guard()
    yield
    if installed_here:
        netguard.uninstall_socket_guard()
