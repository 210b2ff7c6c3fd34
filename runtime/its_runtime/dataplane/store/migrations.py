"""Applies the schema's migrations at start, safely when several replicas start at once.

Everything happens in one transaction that first takes a transaction-scoped advisory
lock: replicas starting together queue on the lock, the first applies what is
missing, the others then find it applied and do nothing. Taking the lock *before*
``CREATE TABLE IF NOT EXISTS schema_migrations`` matters: two sessions creating the
same table concurrently can fail on the catalog's unique index even with IF NOT
EXISTS. The lock is released with the transaction, also when a connection dies.
"""

from __future__ import annotations

import asyncpg

from its_runtime.dataplane.store import schema


class MigrationError(RuntimeError):
    """The database holds a schema this runtime cannot trust (edited or unknown migration)."""


async def migrate(
    conn: asyncpg.Connection,
    migrations: tuple[schema.Migration, ...] = schema.MIGRATIONS,
    *,
    lock_wait_s: float = 120.0,
) -> list[int]:
    """Apply the missing migrations; returns the versions this call applied."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_wait_s * 1000)}ms'")
        await conn.execute(f"SET LOCAL statement_timeout = '{int(lock_wait_s * 1000)}ms'")
        await conn.execute("SELECT pg_advisory_xact_lock($1)", schema.MIGRATION_LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        recorded = {int(r["version"]): str(r["checksum"]) for r in rows}
        known = {m.version: m for m in migrations}
        unknown = sorted(set(recorded) - set(known))
        if unknown:
            raise MigrationError(
                f"database has schema versions {unknown} that this runtime does not know; "
                "it was migrated by a newer release"
            )
        for version, checksum in recorded.items():
            if known[version].checksum != checksum:
                raise MigrationError(
                    f"migration {version} ({known[version].name!r}) differs from the one "
                    "applied to this database; released migrations must never change"
                )
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in recorded:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
    return applied_now
