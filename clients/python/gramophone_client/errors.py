"""Typed errors: what went wrong talking to the server, by the kind of request that failed."""

from __future__ import annotations


class GramophoneError(Exception):
    """Base class of every error the client raises."""


class NoReply(GramophoneError):
    """The server did not answer in time (not running, wrong port, or the packet was lost)."""


class ConnectionLost(GramophoneError):
    """The TCP connection closed, or the socket failed."""


class ServerError(GramophoneError):
    """The server answered ``/fail address message``."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(f"{address}: {message}")
        self.address = address
        self.message = message


class StreamError(ServerError):
    """A ``/connect``, ``/mode``, ``/reset``, ``/content`` or ``/disconnect`` was refused."""


class ParamError(ServerError):
    """A ``/param/NAME`` or ``/params`` request was refused (unknown name, bad value)."""


class StyleError(ServerError):
    """A ``/style/...`` request was refused (unknown style, file outside the styles folder...)."""


def server_error(address: str, message: str) -> ServerError:
    """The most specific ``ServerError`` subclass for a ``/fail`` about ``address``."""
    if address.startswith("/style"):
        return StyleError(address, message)
    if address.startswith("/param"):
        return ParamError(address, message)
    if address in ("/connect", "/disconnect", "/mode", "/reset", "/content"):
        return StreamError(address, message)
    return ServerError(address, message)
