"""The command line: parse, call the API, print, write."""

from gradrank.cli.app import app, main  # noqa: F401
