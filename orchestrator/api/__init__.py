"""The HTTP service (``chordflow serve``): see :mod:`orchestrator.api.app`."""

from orchestrator.api.app import create_app

__all__ = ["create_app"]
