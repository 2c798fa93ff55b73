"""Server-wide building blocks with no actor or web framework in them:
configuration, join tokens, room ids."""
