"""`python -m simulator`: see `simulator.cli` and `python -m simulator --help`."""

from simulator.cli import main

raise SystemExit(main())
