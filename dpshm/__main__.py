"""``python -m dpshm`` runs the command-line interface."""

from dpshm.cli.main import main

raise SystemExit(main())
