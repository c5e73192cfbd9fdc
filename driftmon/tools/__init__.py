"""Commands around the daemon: ``replay`` a file offline, write Prometheus ``rules``
and a Grafana ``dashboard`` from a config, and the ``demo`` producer."""
