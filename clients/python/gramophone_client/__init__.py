"""Client library for the Gramophone OSC server: ``Client`` for scripts, ``gramophone-client`` for the shell."""

from .client import Client, ParamInfo, Session, Status
from .errors import ConnectionLost, GramophoneError, NoReply, ParamError, ServerError, StreamError, StyleError
from .render import RenderReport, render, render_live

__all__ = [
    "Client", "ConnectionLost", "GramophoneError", "NoReply", "ParamError", "ParamInfo", "RenderReport",
    "ServerError", "Session", "Status", "StreamError", "StyleError", "render", "render_live",
]
