"""The local runtime: the cloud's addresses on loopback, its network cuts as silent drops, its nodes as
tiny HTTP servers, and a reconciler that applies the AWS-side state (read from a moto server) to them.
"""
