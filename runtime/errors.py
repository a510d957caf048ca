"""The runtime's one error type: every bad input, file or model raises EdgeVAEError."""


class EdgeVAEError(ValueError):
    """Raised for any input, file or model the runtime cannot use.

    The message names what was expected and what was found, e.g.
    ``decode: z must have shape (N, 8), got (3, 4)``. Subclasses ValueError so
    callers that already catch ValueError keep working.
    """
