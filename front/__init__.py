"""A node's front (`[cluster] workers` > 1, or `[cluster] redis_url`): the HTTP face that places
rooms on media workers (processes of `app.py --worker-index i`), relays REST and WebSockets to
them and to the other nodes of a cluster, and takes over the rooms of dead nodes. It carries no
media: a worker's answer names that worker's UDP port."""
