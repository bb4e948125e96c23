"""``python -m iai_prob.cli``: the ``iai`` command without the console script."""

import sys

from iai_prob.cli import main

if __name__ == "__main__":
    sys.exit(main())
