"""``parley-server`` (``python -m parley``): run the server, or do an operator's chore.

parley-server                          serve with settings from the environment (PARLEY_*)
parley-server admin create USERNAME    make USERNAME an admin: a new user (password asked for,
                                       or the first line of stdin with --password-stdin), or
                                       an existing one promoted
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from parley.app import serve
from parley.config import Settings
from parley.telemetry.logs import configure_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley-server", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    admin = commands.add_parser("admin", help="operator chores on the configured database")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    create = admin_commands.add_parser("create", help="make USERNAME an admin (created if absent)")
    create.add_argument("username", metavar="USERNAME")
    create.add_argument("--display-name", default="", help="for a new user (default: the username)")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read a new user's password from the first line of stdin",
    )
    return parser


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password for the new admin: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("parley-server: the passwords differ")
    return first


def run(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run ``main`` on ``event_loop`` (``PARLEY_EVENT_LOOP``): uvloop when it is installed and
    chosen, else the standard library's loop."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            logging.getLogger("parley").warning("uvloop is not installed: the standard event loop runs")
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "admin":
        from parley.admin_cli import create_admin

        raise SystemExit(
            asyncio.run(
                create_admin(
                    settings, args.username, lambda: _password(args.password_stdin), args.display_name
                )
            )
        )
    run(serve(settings), settings.event_loop)


if __name__ == "__main__":
    main()
