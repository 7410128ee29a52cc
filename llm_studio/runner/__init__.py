"""Job manager: queue, resources, detached workers, stop/resume, crash reconciliation."""
