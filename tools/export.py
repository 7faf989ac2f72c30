#!/usr/bin/env python
"""`python tools/export.py ARGS` is `avssl export ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
