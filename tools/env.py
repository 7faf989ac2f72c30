#!/usr/bin/env python
"""`python tools/env.py ARGS` is `avssl env ARGS`."""
import sys

from avssl.apps.cli import main

if __name__ == "__main__":
    sys.exit(main(["env", *sys.argv[1:]]))
