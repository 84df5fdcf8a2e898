"""The emulated AWS services of the local runtime (what moto does not do, or does leniently)."""
