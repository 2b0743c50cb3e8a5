"""Flow-Gate: a multi-protocol messaging gateway on NATS JetStream."""

__version__ = "0.1.0"
