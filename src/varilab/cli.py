"""The `varilab` command: reads the command's name, hands the rest of the words to it (varilab.commands) and
prints what it returns. The commands come from the registry; this file names none of a family's."""
from __future__ import annotations

import argparse
import os
import sys

USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
               PermissionError, ModuleNotFoundError)


def _parser(listing: dict[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="varilab", description="Train, evaluate and diagnose variational latent-variable "
                                "models. `varilab COMMAND --help` lists a command's options.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in listing.items():
        sub.add_parser(name, add_help=False, help=text)  # each command parses its own words
    return p


def main(argv: list[str] | None = None) -> int:
    from . import commands

    argv = sys.argv[1:] if argv is None else list(argv)
    listing = commands.listing()
    if argv and not argv[0].startswith("-") and argv[0] not in listing:
        print(f"varilab: error: unknown command {argv[0]!r}; choose one of {', '.join(listing)}", file=sys.stderr)
        return 2
    args, rest = _parser(listing).parse_known_args(argv[:1] or argv)
    rest += argv[1:]
    if hasattr(sys.stdout, "reconfigure"):  # a path that is not UTF-8 is printed as its own bytes, not refused
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        print(commands.run_command(args.command, rest))
        return 0
    except USER_ERRORS as e:
        if os.environ.get("VARILAB_DEBUG"):
            raise
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        said = "" if type(e).__name__ == "NotApplicable" else "error: "  # a family without the verb: information
        print(f"varilab {args.command}: {said}{msg or type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"varilab {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:
        from .train import TrainingDiverged

        if isinstance(e, TrainingDiverged):
            print(f"varilab {args.command}: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
