"""Registers the operator commands with the ``pilot`` command line."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pilot.tools import demo, proxy_config, proxy_status, validate, version
    from pilot.tools.analyze import command as analyze

    for command in (validate, analyze, proxy_status, proxy_config, version, demo):
        command.add_parser(sub)
