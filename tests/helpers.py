"""Shared test helpers: build (config, params) from a nanoBragg-style command line."""
import os

from jaxbragg.cli.flags import parse
from jaxbragg.cli.resolve import resolve


def setup_from(args, cwd="."):
    return resolve(parse(args.split() if isinstance(args, str) else list(args)), cwd)
