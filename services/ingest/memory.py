"""Handing memory back to the operating system once a burst of large requests is over.

Validating a batch of 2,500 events allocates about 10 MB, much of it in blocks that CPython
takes from the C library's allocator; freed, they stay in the process (glibc keeps freed
heap memory for reuse), so RSS stayed at its peak long after a burst. ``malloc_trim(0)``
returns the free pages; it is called a second after the process was last seen idle with
that much handled since the last call (a few milliseconds for a heap of 300 MB). Where the C
library has no ``malloc_trim`` (not glibc), this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

TRIM_AFTER_BYTES = 4 * 1024 * 1024  # bodies handled since the last trim
GIVE_BACK_DELAY_S = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    trim: Callable[[int], int] | None = getattr(ctypes.CDLL(name), "malloc_trim", None)
    return trim


_TRIM = _malloc_trim()


def give_back() -> None:
    """Return the C heap's free pages to the operating system (glibc only)."""
    if _TRIM is not None:
        _TRIM(0)
