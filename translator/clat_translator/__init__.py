"""clat-translator: the CLAT sidecar (RFC 6877) and its stateless packet core (RFC 7915)."""
