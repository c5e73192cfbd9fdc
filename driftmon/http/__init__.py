"""The HTTP API: translation between HTTP and the ingest gate and the daemon's views.

``app`` builds the aiohttp application (auth and the request counter are
middleware), ``rows`` and ``cloudevents`` hand bodies to the gate, ``views``
answers ``/metrics``, health, readiness, reload and ``/api/v1``; the
endpoints are listed in the README.
"""
