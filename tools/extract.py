#!/usr/bin/env python
"""`python tools/extract.py ARGS` is `avssl extract ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
