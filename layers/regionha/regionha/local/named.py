"""Stable import path kept for harnesses written against earlier releases: named is ``regionha.local.host.named``."""

from regionha.local.host.named import *  # noqa: F403
from regionha.local.host.named import NamedProcess  # noqa: F401
