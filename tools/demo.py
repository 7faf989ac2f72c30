#!/usr/bin/env python
"""`python tools/demo.py ARGS` is `avssl demo ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
