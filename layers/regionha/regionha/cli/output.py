"""How every ``regionha`` command writes, so that one flag means one thing everywhere.

- ``--output text`` (default): progress lines and a readable summary on stdout.
- ``--output json``: one JSON document on stdout (``| jq`` works) and the progress on stderr, so you can
  watch while a script reads the result. A file written besides (``--report-json FILE``, ``--report-html FILE``)
  is always a flag of its own.
- ``rich`` decides colour and the spinner: both only on a terminal, plain lines otherwise (``NO_COLOR``
  is honoured).

Exit codes shared by the commands: 0 success, 1 the thing run failed, 2 the command could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


class CommandError(Exception):
    """The command cannot run as asked; the message says why (exit 2)."""


def one_line(text: Any, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    """``--output text|json``: the same meaning in every command (see the module docstring)."""
    parser.add_argument("--output", choices=("text", "json"), default="text",
                        help="text (default): progress and a summary; json: one JSON document on stdout, "
                        "progress on stderr")


class Out:
    """Where a command writes: progress lines (stdout in text mode, stderr in json mode), the result.

    ``rich`` decides colour and the spinner: both only on a terminal, plain lines otherwise.
    """

    def __init__(self, output: str = "text"):
        from rich.console import Console

        self.json = output == "json"
        self.console = Console(file=sys.stderr if self.json else sys.stdout, highlight=False, emoji=False,
                               soft_wrap=True)
        self.errors = Console(file=sys.stderr, highlight=False, emoji=False, soft_wrap=True)

    def line(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(Text(text, style=style or ""))

    def text(self, text: str, style: str | None = None) -> None:
        """A line of the text result (nothing in json mode: the JSON document says it)."""
        if not self.json:
            self.line(text, style)

    def result(self, document: dict[str, Any]) -> None:
        """The JSON document on stdout (json mode only)."""
        if self.json:
            sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
            sys.stdout.flush()

    def error(self, prog: str, text: str) -> int:
        from rich.text import Text

        self.errors.print(Text(f"{prog}: {text}", style="bold red"))
        return EXIT_INVALID

    def waiting(self, label: Callable[[], str]) -> Any:
        """A spinner showing ``label()`` on a terminal; nothing otherwise."""
        if not self.console.is_terminal:
            return None
        status = self.console.status(label(), spinner="dots")
        status.start()
        return status
