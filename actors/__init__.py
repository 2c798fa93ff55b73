"""The control plane: a supervisor actor owning room actors, and peer actors.

Actors are Trio tasks in nurseries, talking over bounded memory channels.
Per-packet media work never goes through these mailboxes (see media/router.py).
"""
