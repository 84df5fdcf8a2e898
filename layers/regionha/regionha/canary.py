"""Stable import path kept for harnesses written against earlier releases: the canary is ``regionha.watch.canary``."""

from regionha.watch.canary import *  # noqa: F403
from regionha.watch.canary import NodeCheck, client_source  # noqa: F401
