"""Server-wide building blocks with no actor or web framework in them: configuration, the
signaling messages, join tokens, TURN credentials, ids, the room directory, webhook
signatures and the handling of secrets."""
