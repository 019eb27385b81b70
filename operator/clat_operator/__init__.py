"""clat-operator: the kopf operator that injects the CLAT sidecar into opted-in pods."""
