"""The local runtime: the deployment run against moto plus real BIND processes on loopback."""
