"""Host plumbing of the local runtime: the network namespace, named, node services, loopback network."""
