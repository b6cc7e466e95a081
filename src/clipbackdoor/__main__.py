"""``python -m clipbackdoor``: the same as the ``clipbackdoor`` console script."""

import sys

from clipbackdoor.cli import main

sys.exit(main())
