#!/usr/bin/env python
"""`python tools/compare.py ARGS` is `avssl compare ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
