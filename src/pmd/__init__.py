"""pmd: Procedural Memory Distillation.

A policy practises, a memory of its own attempts grows (experience -> insights -> patterns), a memory-conditioned
self-teacher re-scores the policy's rollouts, and the student (which never sees memory) distills that teacher.
"""

import os as _os

# We use trl.experimental.sdpo knowingly, pinned to trl==1.16.0 and guarded by a contract test.
_os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

__version__ = "0.1.0"
