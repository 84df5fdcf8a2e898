"""One name per idea in the command line's flags, checked over every command the parser has.

- ``--output text|json`` is on every command that prints a result, with the same choices and default.
- A file a command writes or reads is a flag of its own, named for what it holds, with metavar FILE
  (never PATH: "path" means a forwarder path).
- The drill's input flags are its input keys (``region_path`` -> ``--region-path``).
- Old spellings (``--json``, ``--html``, ``--state-file``) still parse but are not what help shows.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from regionha.cli import build_parser, main
from regionha.drill import DrillSettings

# Commands that only check or print a file (a config), or hand over to another program.
NO_OUTPUT = {("topology", "validate"), ("topology", "show"), ("local", "exec"), ("onprem", "named-conf")}


def commands(parser: argparse.ArgumentParser,
             prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from commands(child, (*prefix, name))


ALL = list(commands(build_parser()))


def shown(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize(("name", "parser"), ALL, ids=[" ".join(n) for n, _ in ALL])
def test_every_command_says_output_the_same_way_and_names_files_file(name, parser) -> None:
    output = [a for a in shown(parser) if "--output" in a.option_strings]
    if name in NO_OUTPUT:
        assert not output
    else:
        assert len(output) == 1 and output[0].choices == ("text", "json") and output[0].default == "text"
    for action in shown(parser):
        if action.metavar == "PATH":  # PATH is a forwarder path, never a file
            assert "forwarder path" in action.help, f"{' '.join(name)} {action.option_strings}"
        if action.type is Path:
            assert action.metavar in ("FILE", "DIR"), f"{' '.join(name)} {action.option_strings}"
        assert "--json" not in action.option_strings and "--path" not in action.option_strings


def test_the_drill_flags_are_the_drill_input_keys() -> None:
    start = dict(ALL)[("drill", "start")]
    flags = {s for a in shown(start) for s in a.option_strings}
    for f in dataclasses.fields(DrillSettings):
        assert "--" + f.name.replace("_", "-") in flags


def test_the_local_state_file_has_one_name_across_commands() -> None:
    for name, parser in ALL:
        for action in shown(parser):
            if "--state-file" in action.option_strings or "--local-state" in action.option_strings:
                assert action.option_strings[0] == "--local-state" and action.dest == "local_state", name


def test_canary_run_json_alias_is_output_json() -> None:
    parser = build_parser()
    assert parser.parse_args(["canary", "run", "--json"]).output == "json"
    assert parser.parse_args(["canary", "run", "--output", "json"]).output == "json"
    assert parser.parse_args(["local", "demo", "--json", "r.json"]).legacy_json == Path("r.json")


def test_an_invalid_drill_input_names_the_flag(capsys) -> None:
    assert main(["drill", "start", "--scenario", "cut-path", "--region-path", "osaka-bind", "--dry-run",
                 "--step-timeout", "-1", "--state-machine-arn", "arn:aws:states:ap-southeast-1:1:stateMachine:x",
                 "--output", "json"]) == 2
    printed = capsys.readouterr()
    assert "--step-timeout" in printed.err and printed.out == ""  # json mode: nothing but JSON on stdout
