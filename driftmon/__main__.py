"""``python -m driftmon`` is the ``driftmon`` command."""

from driftmon.cli import main

raise SystemExit(main())
