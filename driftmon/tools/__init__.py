"""Command-line tools around the daemon: config generation, replays, rule and dashboard export."""
