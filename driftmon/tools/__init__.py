"""Command-line tools around the daemon: ``init`` (config generation), ``replay``,
``rules`` and ``dashboard`` export, and the ``demo`` producer."""
