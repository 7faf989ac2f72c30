"""``python -m avssl ARGS`` is ``avssl ARGS``."""
import sys

from avssl.apps.cli import main

sys.exit(main())
