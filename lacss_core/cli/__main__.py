"""``python -m lacss_core.cli``: the ``lacss`` command."""

import sys

from lacss_core.cli import main

sys.exit(main())
