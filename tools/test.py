#!/usr/bin/env python
"""`python tools/test.py ARGS` is `avssl test ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["test", *sys.argv[1:]]))
