"""Small helpers shared by the command-line entry points (effnet-train, -export, -cam, -convert)."""

import os
import sys


def prog_name(module):
    """How the user started us, for usage lines: `effnet-export` as a console script,
    `python -m hub_export` when run as a module (argv[0] is then a .py path)."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return invoked if invoked and not invoked.endswith(".py") else f"python -m {module}"
