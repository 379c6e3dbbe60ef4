"""Shared test helpers: build (config, params) from a nanoBragg-style command line."""
import os

from jaxbragg.cli.flags import parse
from jaxbragg.cli.resolve import resolve


def setup_from(args, cwd="."):
    return resolve(parse(args.split() if isinstance(args, str) else list(args)), cwd)


def run_cli(argv, capsys):
    """Run the command line in-process; returns (exit status, stdout, stderr)."""
    from jaxbragg.cli import main
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err
