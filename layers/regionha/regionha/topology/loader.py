"""Reading a topology: a file or parsed data in, a validated ``Topology`` or a ``TopologyError`` out.

Structure (types, unknown keys) is checked by pydantic (``regionha.topology.model``); the cross-field
rules by ``regionha.topology.validation``. Both report one ``Problem`` per fault, each naming the
offending field, gathered into one ``TopologyError`` naming the source.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from regionha.topology.model import Topology

DEFAULT_TOPOLOGY = "reference.yaml"


@dataclass(frozen=True)
class Problem:
    """One fault of a topology file: the field it concerns and what is wrong with it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class TopologyError(ValueError):
    """A topology that cannot be used; retrying cannot help (a configuration error)."""

    def __init__(self, problems: list[Problem], source: str = "topology"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(str(p) for p in problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        before = loc[i - 1] if i else None
        if isinstance(part, int):
            out += f"[{part}]"
        # pydantic's discriminator tags (a path's kind, the client site's kind), not fields
        elif (isinstance(before, int) and part in ("resolver_endpoint", "bind")) or (
            before == "client" and part in ("vpc", "onprem")
        ):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    problems = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "union_tag_invalid" and e["loc"] == ("client",):
            ctx = e.get("ctx") or {}
            kinds = ctx.get("expected_tags")
            problems.append(Problem("client.kind", f"unknown kind {ctx.get('tag')!r} (one of {kinds})"))
            continue
        problems.append(Problem(_loc(e["loc"]), msg))
    return problems


def parse_topology(data: Any, source: str = "topology") -> Topology:
    """Structure and cross-field checks of already-parsed data; raises TopologyError."""
    from regionha.topology.validation import check_topology

    if not isinstance(data, dict):
        raise TopologyError(
            [Problem("(top level)", f"must be a mapping of keys to values, not {type(data).__name__}")],
            source,
        )
    try:
        topology = Topology.model_validate(data)
    except ValidationError as e:
        raise TopologyError(_pydantic_problems(e), source) from e
    problems = check_topology(topology)
    if problems:
        raise TopologyError(problems, source)
    return topology


def load_topology(path: str | Path | None = None) -> Topology:
    """Read and validate a topology file; ``None`` means the shipped reference deployment.

    Every failure (unreadable, not UTF-8, empty, bad YAML, bad content) becomes a ``TopologyError``
    naming the file, so no caller ever shows a traceback for a bad file.
    """
    if path is None:
        path = Path(str(resources.files("regionha.topologies").joinpath(DEFAULT_TOPOLOGY)))
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TopologyError([Problem("(file)", f"cannot read: {e.strerror or e}")], source) from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TopologyError(
            [Problem("(file)", f"not UTF-8 text (invalid byte 0x{raw[e.start]:02x} at offset {e.start})")],
            source,
        ) from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TopologyError([Problem("(file)", f"not valid YAML: {_yaml_error(e)}")], source) from e
    if data is None:
        raise TopologyError([Problem("(file)", "is empty (no YAML document)")], source)
    return parse_topology(data, source)


def _yaml_error(e: yaml.YAMLError) -> str:
    # PyYAML's str() quotes the source as "<unicode string>" and draws a caret; say where instead.
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        what = " ".join(part for part in (e.context, e.problem) if part)
        return f"line {mark.line + 1}, column {mark.column + 1}: {_one_line(what)}"
    return _one_line(str(e))


def _one_line(text: str) -> str:
    # YAML errors span several lines with a caret drawing; keep the words, one problem per line.
    return re.sub(r"\s+", " ", text).strip()


# Step Functions refuses an execution input larger than 256 KiB (StartExecution, "input").
MAX_EXECUTION_INPUT_BYTES = 256 * 1024


def build_input(path: str | Path | None = None) -> dict[str, Any]:
    """The build (and teardown) state machine's execution input for a topology file: ``{"topology": {...}}``.

    Loads and validates the file like ``load_topology`` (``None``: the shipped reference) and returns
    the normalised topology inline, so the build, and every scheduled consumer after it (canary,
    failover controller, drill, sweeper: they read the topology the build saved in the inventory), use
    exactly this file without redeploying the stack. Raises ``TopologyError`` naming the file and field
    for an invalid file, or when the input would exceed Step Functions' 256 KiB execution input.
    """
    topology = load_topology(path)
    payload = {"topology": topology.to_json()}
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > MAX_EXECUTION_INPUT_BYTES:
        source = str(path) if path is not None else DEFAULT_TOPOLOGY
        raise TopologyError(
            [Problem("(file)", f"is {size} bytes as an execution input; Step Functions allows "
                               f"{MAX_EXECUTION_INPUT_BYTES}")], source)
    return payload
