"""``python -m dpshm`` runs the command-line interface."""

from dpshm.cli import main

raise SystemExit(main())
