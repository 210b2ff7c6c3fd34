"""PostgreSQL persistence (asyncpg) that loses nothing when the database goes away.

Layout: :mod:`schema` holds the versioned DDL, :mod:`migrations` applies it under an
advisory lock, :mod:`database` owns the pool and its health, :mod:`rows` defines the
row shapes, :mod:`journal` is the bounded on-disk spool, :mod:`writer` batches rows
into binary COPYs (spooling and replaying through the journal) and :mod:`queries`
answers the query API.
"""
