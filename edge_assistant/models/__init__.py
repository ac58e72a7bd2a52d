"""Model files: what to fetch (manifest), fetching it resumably (download),
checking it (verify), and an audio-only projector to save memory (slim).

Every module logs as ``edge_assistant.models``: one stage, one name in the log.
"""
