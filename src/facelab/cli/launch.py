"""``--gpus N`` of every training command: the same command again under torchrun, one process per GPU."""

from __future__ import annotations

import argparse
import os
import sys

from facelab.core.config import COMMAND_LINE, add_config_arguments, config_from_dict, given_options
from facelab.core.distributed import LaunchConfig, torchrun_command, without_flag


def add_gpus_option(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, LaunchConfig)


def relaunch_on_gpus(args: argparse.Namespace, argv: list[str]) -> None:
    """With ``--gpus N``, replace this process by ``torchrun --nproc_per_node N -m facelab ARGV`` (without
    ``--gpus``), so Ctrl-C and the exit status are torchrun's; without it, return."""
    cfg = config_from_dict(LaunchConfig, given_options(args, LaunchConfig), COMMAND_LINE)
    if not cfg.gpus:
        return
    command = torchrun_command(cfg, without_flag(argv, "--gpus"))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
