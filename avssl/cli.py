"""Deprecated location of the command line, kept for one release: use ``avssl.apps.cli`` (or ``python -m avssl``)."""
import sys

from avssl.apps.cli import build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
