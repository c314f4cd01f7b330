"""The one error type the wire layer raises for bad input."""


class WireError(ValueError):
    """Raised for any input that is not a valid, canonical, size-capped encoding.

    Every decoding path converts whatever went wrong (truncation, bad types, unknown tags,
    bad signatures) into this one type, so callers can contain hostile input with a single
    `except WireError` and log the message, which always says what was wrong.
    """
