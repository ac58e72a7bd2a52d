"""The always-listening assistant, ``edge-assistant run``."""
