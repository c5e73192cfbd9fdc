"""Running more than one replica: window counts shared in Redis, one leased leader.

- the ``cluster:`` config section is read by :mod:`driftmon.config.cluster`.
- :mod:`driftmon.cluster.store`: the Redis layout and its atomic scripts.
- :mod:`driftmon.cluster.replica`: group commit of pane deltas (the ingest side).
- :mod:`driftmon.cluster.leader`: the lease and the leader's evaluation.
- :mod:`driftmon.cluster.node`: the pieces wired together for one daemon.

These import ``redis`` and are loaded only when a config asks for
``cluster.mode: shared``.
"""
