"""Watch: probes, canaries, metrics, alarms and the readiness audit."""
