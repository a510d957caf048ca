"""The runtime's one error type (every bad input, file or model raises EdgeVAEError), the integer check, and
how an untrusted value or message is shown (cut short, on one line)."""
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


def shorten(value, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters: for messages that quote untrusted values."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def one_line(message, limit: int = 2000) -> str:
    """`message` as one printable line: control characters (newlines, terminal escapes) escaped, cut to `limit`."""
    text = str(message)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[:limit] + "..."



def argument_parser(**kwargs):
    """An argparse.ArgumentParser whose usage errors are one line on stderr (exit 2), like every other error.
    (argparse is imported here, when a command line is parsed, not when the runtime is imported.)"""
    import argparse

    global _Parser
    if _Parser is None:
        class OneLineParser(argparse.ArgumentParser):
            def error(self, message):
                self.exit(2, f"{self.prog}: error: {one_line(message)} (--help for usage)\n")

        _Parser = OneLineParser
    return _Parser(**kwargs)


_Parser = None
