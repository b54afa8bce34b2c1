"""``python -m worker``: the same as the ``wecom-card-worker`` command."""

import sys

from worker.cli import main

sys.exit(main())
