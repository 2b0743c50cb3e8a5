"""Incoming triggers: third-party services POST to ``/hooks/<id>``; verified bodies are published to a topic."""

from gateway.triggers.service import Trigger, Triggers

__all__ = ["Trigger", "Triggers"]
