"""The command-line reference, from the argparse parsers the commands build.

Why: the options are written once, in the parsers. Some commands build their parser inside
``main()``; ``capture_parser`` runs ``main`` with a ``parse_args`` that hands the parser back
instead of parsing, so no command runs and nothing has to be copied into the docs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from contextlib import contextmanager

#: (title, import path of a ``parser()`` factory or of a ``main(argv)`` that builds one); the services
#: (culler, monitoring, accounting) are traitlets Applications, their options are on the services page
COMMANDS = [
    ("apex-hub", "apex_hub.cli:main"),
    ("python -m apex_hub.profiles", "apex_hub.profiles.__main__:main"),
    ("python -m apex_hub.kubesim.node", "apex_hub.kubesim.node:main"),
]


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__("parser captured")
        self.parser = parser


@contextmanager
def _parse_args_captures():
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original


def _load(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def capture_parser(target: str) -> argparse.ArgumentParser:
    """The parser of ``target``: a factory's return value, or the one ``main([])`` would parse with."""
    func = _load(target)
    if target.endswith(":parser"):
        return func()
    with _parse_args_captures():
        try:
            func([])
        except _Captured as captured:
            return captured.parser
    raise RuntimeError(f"{target} returned without parsing arguments")


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option_row(action: argparse.Action) -> str:
    names = ", ".join(f"`{n}`" for n in action.option_strings) or f"`{action.metavar or action.dest}`"
    if action.nargs == 0:
        value = ""
    elif action.choices:
        value = " \\| ".join(f"`{c}`" for c in action.choices)
    else:
        value = f"`{action.metavar or action.dest.upper()}`" if action.option_strings else ""
    default = action.default
    shown = "" if default in (None, argparse.SUPPRESS, False, []) or action.nargs == 0 else f"`{default}`"
    if action.required and action.option_strings:
        shown = "required"
    helptext = (action.help or "") if action.help != argparse.SUPPRESS else ""
    if "%(" in helptext:
        helptext = helptext % {**vars(action), "prog": ""}
    return f"| {names} | {value} | {_cell(shown)} | {_cell(helptext)} |"


def parser_markdown(title: str, parser: argparse.ArgumentParser, level: int = 2) -> str:
    """One section per command and subcommand: usage, description and an option table."""
    anchor = "cli-" + "-".join(title.replace("python -m ", "").replace(".", "-").split())
    lines = [f"({anchor})=", f"{'#' * level} `{title}`", ""]
    if parser.description:
        lines += [_cell(parser.description), ""]
    usage = parser.format_usage().removeprefix("usage: ").strip()
    lines += ["```text", usage, "```", ""]
    actions = [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))
        and a.help != argparse.SUPPRESS
    ]
    if actions:
        lines += ["| argument | value | default | description |", "|---|---|---|---|"]
        lines += [_option_row(a) for a in actions]
        lines.append("")
    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        helps = {c.dest: c.help for c in sub._choices_actions}
        for name, child in sub.choices.items():
            if not child.description and helps.get(name):
                child.description = helps[name]
            lines.append(parser_markdown(f"{title} {name}", child, level + 1))
    return "\n".join(lines)


def cli_markdown() -> str:
    sections = []
    for title, target in COMMANDS:
        parser = capture_parser(target)
        parser.prog = title  # otherwise the name of the running program (sphinx-build)
        sections.append(parser_markdown(title, parser))
    return "\n".join(sections)
