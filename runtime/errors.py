"""The runtime's one error type (every bad input, file or model raises EdgeVAEError), and the integer check."""
from __future__ import annotations

import numbers


class EdgeVAEError(ValueError):
    """Raised for any input, file or model the runtime cannot use.

    The message names what was expected and what was found, e.g.
    ``decode: z must have shape (N, 8), got (3, 4)``. Subclasses ValueError so
    callers that already catch ValueError keep working.
    """


def check_int(value, what: str, lo: int, hi: int) -> int:
    """`value` as an int in [lo, hi], or EdgeVAEError "{what} must be an int in [lo, hi], got ...".

    A bool is not an int here (True is not a batch size); numpy integers are.
    """
    if type(value) is int and lo <= value <= hi:  # the common case, without the ABC check below
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not lo <= value <= hi:
        raise EdgeVAEError(f"{what} must be an int in [{lo}, {hi}], got {value!r}")
    return int(value)
