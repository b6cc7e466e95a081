"""``clipbackdoor``: one console script, one module per subcommand, thin over the library.

``main(argv)`` is callable from tests. It configures logging, and turns the errors users can cause
(bad config, bad data) into a one-line message and exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from clipbackdoor import __version__
from clipbackdoor.cli import (
    clean,
    convert,
    data,
    demo,
    evaluate,
    listing,
    optimize_patch,
    poison,
    pretrain,
    report,
    setup_wordnet,
    sweep,
    synthetic,
)
from clipbackdoor.errors import ConfigError, DataError, SetupError, did_you_mean

COMMANDS = (demo, poison, pretrain, clean, evaluate, optimize_patch, sweep, report, synthetic, listing, setup_wordnet,
            data, convert)


class _Parser(argparse.ArgumentParser):
    """argparse with a suggestion for a mistyped command, choice or option (``clipbackdoor demp`` ->
    did you mean 'demo'?). Subcommand parsers are made of the same class, so every level suggests."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            hint = did_you_mean(str(value), map(str, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint}; choose from {choices}")

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001 (argparse's own signature)
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # The options of the subcommand the user typed, which is where a mistyped option belongs.
            options = list(self._option_string_actions)
            command = self._subcommand(getattr(parsed, "command", None))
            if command is not None:
                options += list(command._option_string_actions)
            hint = next((did_you_mean(e.split("=")[0], options) for e in extras if e.startswith("-")), "")
            (command or self).error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def _subcommand(self, name: str | None) -> argparse.ArgumentParser | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return action.choices[name]
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="clipbackdoor",
        description="Poison, pre-train, clean and evaluate CLIP models (Verma et al. 2023, CleanCLIP).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        # Log lines go through tqdm, so they print above the progress bar instead of breaking it.
        with logging_redirect_tqdm():
            return args.func(args) or 0
    except (ConfigError, DataError, SetupError, FloatingPointError) as err:
        print(f"clipbackdoor {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`clipbackdoor list | head`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        # The file system said no (no space left, permission denied, a file where a folder should be):
        # the message and the file it names are the whole story.
        print(f"clipbackdoor {args.command}: error: {_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"clipbackdoor {args.command}: interrupted; run the same command again to resume "
            "from the last checkpoint",
            file=sys.stderr,
        )
        return 130


def _os_error(err: OSError) -> str:
    if err.strerror and err.filename is not None:
        return f"{err.strerror}: {err.filename}"
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
