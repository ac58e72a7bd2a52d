"""edge-assistant: an offline voice assistant for a Raspberry Pi."""

__version__ = "0.1.0"
