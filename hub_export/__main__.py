"""`python -m hub_export ...`: the earlier spelling of `effnet-export` (effnet_keras/cli/export.py)."""

import sys

from effnet_keras.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
