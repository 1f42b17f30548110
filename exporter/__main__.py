"""`python -m exporter` is the `netsentry` command."""

from exporter.cli.main import main

raise SystemExit(main())
