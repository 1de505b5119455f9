"""What every command's parser shares: argparse that raises its errors (the command line prints them in one line), and
the arguments several commands take."""
from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse that raises its errors (the command line prints them in one line) and prints help as usual."""

    def error(self, message):
        raise ValueError(message)


def command_parser(name: str, text: str, args: list[tuple[str, dict]], add_help: bool = True) -> Parser:
    p = Parser(prog=f"varilab {name}", description=text, add_help=add_help)
    for flag, kwargs in args:
        p.add_argument(flag, **kwargs)
    return p


def wants_help(argv: list[str]) -> bool:
    return "-h" in argv or "--help" in argv


RUN = ("run", {"metavar": "RUN", "help": "run folder"})
JSON = ("--json", {"action": "store_true", "help": "print one JSON object"})
DATA = ("--data", {"help": "use another data set or file with the same number of features"})
FORCE = ("--force", {"action": "store_true", "help": "overwrite existing files"})
