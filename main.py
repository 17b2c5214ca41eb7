"""`python main.py [flags]` from a checkout: the same job as the installed `effnet-train` command.

With no flags it runs the digits demo (efficientnetv2-nano, 3 progressive stages on scikit-learn's
digits, EMA eval, TF Hub export). Every flag: `python main.py --helpfull` or docs/training.md.
The driver lives in the package (effnet_keras/cli/train.py) so the wheel carries it; this file
is not installed.
"""

import sys

from effnet_keras.cli.train import main  # TF's start-up lines: hidden (effnet_keras/cli/startup.py), --verbosity=1

if __name__ == "__main__":
    sys.exit(main())
