"""Audio in and out, in the one format of :mod:`.format` (16 kHz mono float32).

A frame comes from a source (:mod:`.sources`: the microphone, or a file read by
:mod:`.files`), passes the wake word (``edge_assistant.wake``) and endpointing
(``edge_assistant.vad``, ``edge_assistant.endpoint``) to a turn
(``edge_assistant.turn``), and the spoken reply goes to a playback
(:mod:`.playback`: a device, or a recording).
:mod:`.devices` finds the PortAudio devices both ends use.
"""
