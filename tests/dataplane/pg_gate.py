"""A TCP gate in front of the shared PostgreSQL: shut it and the database is unreachable.

Stopping the shared server would break every other test using it, so an outage is
made here instead: the writer's DSN points at this gate, which forwards to the real
server while open; :meth:`PgGate.shut` cuts every connection and stops listening
(new connections are refused, as for a server that is down), :meth:`PgGate.open`
listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from its_devenv.ports import free_port


class PgGate:
    def __init__(self, dsn: str) -> None:
        match = re.search(r"@([^:/]+):(\d+)/", dsn)
        assert match, dsn
        self.upstream = (match.group(1), int(match.group(2)))
        self.port = free_port()
        self.dsn = dsn[: match.start(1)] + f"127.0.0.1:{self.port}" + dsn[match.end(2) :]
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._connect, "127.0.0.1", self.port, reuse_address=True
        )

    async def shut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for stream in list(self._streams):
            stream.transport.abort()
        self._streams.clear()

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._streams |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._streams -= {writer, up_writer}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
