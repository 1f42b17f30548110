"""`python -m exporter` is the `netsentry` command."""

from exporter.cli import main

raise SystemExit(main())
