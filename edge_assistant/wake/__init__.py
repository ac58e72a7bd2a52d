"""The wake word: the openWakeWord-compatible detector every input frame passes
through (detector), the ``wakeword`` commands (cli), and training a phrase on
the device (train)."""
