"""Services of a server process that are not actors: webhook delivery, recordings, and the
writer of the room directory. The supervisor and the room actors use them; none of them owns
a room's state."""
