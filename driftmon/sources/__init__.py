"""Bytes into batches of columns: no HTTP, no binning.

``jsontext`` is the one JSON loader (depth bound, error positions);
``bodies`` reads rows bodies, ``files`` data files, ``cloudevents`` the
CloudEvents envelope and routing, ``payloads`` the KServe V1, Open Inference
Protocol (V2) and Seldon payloads inside an event.
"""

from driftmon.sources.bodies import parse_body
from driftmon.sources.files import iter_table_chunks, read_table
from driftmon.sources.jsonrows import Batch
from driftmon.sources.jsontext import BodyError, UnsupportedMediaType

__all__ = [
    "Batch",
    "BodyError",
    "UnsupportedMediaType",
    "iter_table_chunks",
    "parse_body",
    "read_table",
]
