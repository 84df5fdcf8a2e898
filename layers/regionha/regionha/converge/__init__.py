"""Converge operations: describe first, create what is missing, fix what drifted, report each.

Every operation returns a list of ``Outcome`` (one per resource it looked at). Resources are
found by their tags (``regionha:deployment`` + ``regionha:name``), never remembered between
steps, so any step can be re-run after an interruption and converges.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

Action = Literal["created", "updated", "unchanged", "deleted", "absent"]


@dataclass(frozen=True)
class Outcome:
    kind: str  # "vpc", "subnet", "route", "security_group_rule", "instance", ...
    name: str  # the stable logical name (topology name, or e.g. "A1-rt:0.0.0.0/0")
    action: Action
    id: str | None = None
    region: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    """Counts per action, e.g. {"created": 12, "unchanged": 3}."""
    return dict(Counter(o.action for o in outcomes))


def report(outcomes: list[Outcome]) -> dict[str, Any]:
    """The JSON a converge Lambda returns to its state machine."""
    return {"summary": summarize(outcomes), "outcomes": [o.to_json() for o in outcomes]}


def idempotency_token(*parts: str, length: int = 32) -> str:
    """A stable API idempotency token (ClientToken, CallerReference, CreatorRequestId).

    Derived from stable names plus the run id (the state machine's execution name), so a Lambda
    retry inside one run cannot create a duplicate, while a new run after a teardown is not
    answered with the deleted resource of an earlier run.
    """
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:length]
