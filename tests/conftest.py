"""Session-wide setup: every child Python runs the driftmon tree the tests import.

Tests start ``python -m driftmon`` from various working directories; see
:func:`harness.child_environment` for why a folder named ``driftmon`` there must
not decide which code runs.
"""

from __future__ import annotations

import os

from harness import child_environment

os.environ.update(child_environment())
