"""Running more than one replica: window counts shared in Redis, one leased leader.

- :mod:`driftmon.cluster.settings`: the ``cluster:`` config section.
- :mod:`driftmon.cluster.store`: the Redis layout and its atomic scripts.
- :mod:`driftmon.cluster.replica`: group commit of pane deltas (the ingest side).
- :mod:`driftmon.cluster.leader`: the lease and the leader's evaluation.
- :mod:`driftmon.cluster.node`: the pieces wired together for one daemon.

Only ``settings`` is imported by the config loader; the others import
``redis`` and are loaded when a config asks for ``cluster.mode: shared``.
"""
