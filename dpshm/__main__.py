"""``python -m dpshm`` runs the command-line interface."""

try:
    from dpshm.cli.main import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C while Python loads the command line: quietly, as later
    code = 130
raise SystemExit(code)
