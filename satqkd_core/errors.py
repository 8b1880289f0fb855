"""Exceptions raised by the protocol core."""


class InputError(ValueError):
    """An argument given to a core function is malformed; the message names it."""


class ProtocolError(RuntimeError):
    """A peer's protocol message is inconsistent with the state of the exchange."""


class AuthenticationError(ProtocolError):
    """A classical message's authentication tag does not verify."""
