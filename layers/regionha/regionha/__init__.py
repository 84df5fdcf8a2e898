"""regionha: build, watch and drill a multi-region HA cluster whose failover works by DNS name control."""

__version__ = "0.1.0"
