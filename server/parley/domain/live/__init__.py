"""Live voice: one bidirectional stream per conversation (ChatService.Converse).

``conversation`` runs a stream (turn detection, a run per turn, barge-in); ``playback`` keeps
what the client reported as played and cuts an interrupted reply to it; ``pacing`` bounds how
fast a client may send audio.
"""

__all__: list[str] = []
