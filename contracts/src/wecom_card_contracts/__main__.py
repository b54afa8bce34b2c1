"""``python -m wecom_card_contracts validate FILE``: see :mod:`wecom_card_contracts.cli`."""

import sys

from wecom_card_contracts.cli import main

sys.exit(main())
