"""The cluster: a shared room directory and node registry on Redis."""
