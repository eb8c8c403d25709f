"""The ``facelab`` command: a thin layer that hands each sub-command to its pipeline stage.

The parsers live here and nothing below imports them: the stages take typed config objects. Each
module in ``COMMAND_MODULES`` has a ``register(subparsers)`` function that adds its commands and
sets ``func`` on them. A :class:`FacelabError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from facelab import __version__
from facelab.cli.launch import relaunch_on_gpus
from facelab.core.errors import FacelabError
from facelab.core.logs import setup_logging

COMMAND_MODULES = [
    "facelab.cli.frames",
    "facelab.cli.extract",
    "facelab.cli.faceset",
    "facelab.cli.train",
    "facelab.cli.xseg",
    "facelab.cli.enhancer",
    "facelab.cli.merge",
    "facelab.cli.swap",
    "facelab.cli.stargan",
    "facelab.cli.pfe",
    "facelab.cli.verify",
    "facelab.cli.demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facelab", description="Face swap, attribute editing, face embeddings.")
    parser.add_argument("--version", action="version", version=f"facelab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    # `kill`, `docker stop` and job schedulers send SIGTERM: stop the way Ctrl-C does (trainers save first)
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        relaunch_on_gpus(args, argv)  # a training command with --gpus N goes on under torchrun
        return int(args.func(args) or 0)
    except FacelabError as exc:
        print(f"facelab: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print("facelab: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
