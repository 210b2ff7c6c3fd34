"""Two-level cache for the latest per-camera analytics and for query results.

L1 is in-process (an LRU with TTL: no network, always there); L2 is Redis, shared by
the replicas (one replica's result serves another's request). Values are bytes (the
JSON bodies the API returns), so a hit is served without re-encoding. Redis is an
optimisation, never a dependency: when it fails, lookups fall through to L1 and the
database, the failure is counted and shown in readiness details, and L2 comes back
by itself.
"""
