"""Cross-field checks of a topology (filled in by the validation work)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from regionha.topology import Problem, Topology


def check_topology(topology: Topology) -> list[Problem]:
    return []
