"""`python -m medserve.database upgrade|prune`: the database commands without the CLI (the
serving image's entry point for the chart's migration hook Job)."""

from __future__ import annotations

import argparse
import sys

from medserve.database.commands import CommandRefused, prune_command, upgrade_command
from medserve.database.schema import SchemaNotCurrent
from medserve.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medserve.database")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("upgrade", help="migrate MEDSERVE_DATABASE_URL to this release's schema")
    prune = commands.add_parser("prune", help="delete predictions older than the retention")
    prune.add_argument("--days", type=int, default=None, help="override the retention setting")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.command == "upgrade":
            print(upgrade_command(settings))
        else:
            print(prune_command(settings, args.days))
    except (CommandRefused, SchemaNotCurrent) as refusal:
        print(f"refused: {refusal}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
