#!/usr/bin/env python
"""`python tools/prep.py ARGS` is `avssl prep ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["prep", *sys.argv[1:]]))
