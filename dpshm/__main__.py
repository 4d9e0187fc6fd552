"""``python -m dpshm`` runs the command-line interface."""

try:
    from dpshm.cli.main import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the command line: quietly, as later
    raise SystemExit(130) from None

raise SystemExit(main())
