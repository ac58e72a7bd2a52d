"""Every room, one brain (README "Rooms"): Wyoming satellites as remote
microphones and speakers, each room with its own wake word, endpointer and
conversation on the one engine.

- :mod:`.pcm`: Wyoming's audio chunks to and from the pipeline's samples.
- :mod:`.link`: the brain's connection to one satellite (its microphone as an
  audio source, its speaker as a playback), reconnecting with backoff.
- :mod:`.house`: ``edge-assistant run`` with satellites: a room per satellite
  (and the local one), sharing the engine, reported to systemd.
- :mod:`.satellite`: ``edge-assistant satellite``, our own thin satellite.
"""
