"""Where an audit reads the network's public bytes: the DHT, a node's API, an export, a store.

Every source answers the same three questions (the genesis record, the decided block and
certificate at a height, content by sha256) and none is trusted: the replay checks each answer
against the pinned genesis hash, the certificates and the content hashes itself. A missing answer
is None; an answer that cannot even be parsed raises SourceError, which the replay reports
against the item it asked for.
"""

from __future__ import annotations

import hashlib
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import trio

from consensus.messages import Certificate, DecisionPacket
from consensus.validators import ValidatorSet
from wire.codec import decode
from wire.errors import WireError

#: what one answer may weigh (a block is at most 1 MiB; modules and payloads are capped below this)
MAX_ANSWER = 64 * 1024 * 1024
HTTP_TIMEOUT = 20.0
DHT_TIMEOUT = 10.0


class SourceError(RuntimeError):
    """The source answered with bytes that are not what was asked for (one line)."""


class Source(Protocol):
    #: how the report names where the bytes came from
    label: str

    async def genesis(self, digest: bytes | None) -> bytes | None: ...

    async def decision(self, height: int) -> DecisionPacket | None: ...

    async def content(
        self, digest: bytes, *, size: int | None = None, key: bytes | None = None
    ) -> bytes | None:
        """Bytes whose sha256 should be `digest` (the caller checks); `key` is the DHT key's
        digest when it differs (a chunked blob's manifest), `size` bounds the fetch."""
        ...


def _packet(block: bytes, cert: bytes, height: int) -> DecisionPacket:
    try:
        return DecisionPacket(block=block, certificate=decode(cert, Certificate))
    except WireError as exc:
        raise SourceError(f"height {height}: the certificate does not decode: {exc}") from None


class ExportSource:
    """A folder `validator-node audit export` wrote (see `audit.export` for its layout)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.label = f"export {self.root}"

    def _read(self, rel: str) -> bytes | None:
        path = self.root / rel
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    async def genesis(self, digest: bytes | None) -> bytes | None:
        return self._read("genesis.cbor")

    async def decision(self, height: int) -> DecisionPacket | None:
        block, cert = self._read(f"blocks/{height}.cbor"), self._read(f"certificates/{height}.cbor")
        if block is None or cert is None:
            return None
        return _packet(block, cert, height)

    async def content(
        self, digest: bytes, *, size: int | None = None, key: bytes | None = None
    ) -> bytes | None:
        for rel in (f"modules/{digest.hex()}.wasm", f"payloads/{digest.hex()}.bin"):
            found = self._read(rel)
            if found is not None:
                return found
        return None


class StoreSource:
    """A node's data folder, read only: `node.sqlite` (decided blocks, the genesis record) and
    `dht.sqlite` (content records). For an operator auditing their own node's copy."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        self.label = f"store {self.dir}"
        path = self.dir / "node.sqlite"
        if not path.exists():
            raise SourceError(f"no node store at {path}")
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
        self._dht = _read_only(self.dir / "dht.sqlite")
        self._payloads = _read_only(self.dir / "payloads.sqlite")

    def close(self) -> None:
        self._db.close()
        for db in (self._dht, self._payloads):
            if db is not None:
                db.close()

    async def genesis(self, digest: bytes | None) -> bytes | None:
        row = self._db.execute("SELECT record FROM genesis WHERE id = 0").fetchone()
        return None if row is None else bytes(row[0])

    async def decision(self, height: int) -> DecisionPacket | None:
        row = self._db.execute(
            "SELECT block, certificate FROM decided WHERE height = ?", (height,)
        ).fetchone()
        return None if row is None else _packet(bytes(row[0]), bytes(row[1]), height)

    async def content(
        self, digest: bytes, *, size: int | None = None, key: bytes | None = None
    ) -> bytes | None:
        row = None
        if self._dht is not None:
            row = self._dht.execute(
                "SELECT value FROM records WHERE key = ?", (f"/bt-content/{digest.hex()}",)
            ).fetchone()
        if row is None and self._payloads is not None:
            row = self._payloads.execute("SELECT data FROM payloads WHERE sha256 = ?", (digest,)).fetchone()
        return None if row is None else bytes(row[0])


class ApiSource:
    """Any node's HTTP API: `/api/genesis/raw`, `/api/blocks/N/raw`, `/api/blocks/N/certificate`
    and `/api/content/<sha256>`, all raw bytes."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.label = f"api {self.url}"

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=HTTP_TIMEOUT) as resp:
                data = resp.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise SourceError(f"GET {path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"GET {self.url}{path}: {getattr(exc, 'reason', exc)}") from None
        if len(data) > MAX_ANSWER:
            raise SourceError(f"GET {path}: more than {MAX_ANSWER} bytes")
        return data

    async def genesis(self, digest: bytes | None) -> bytes | None:
        return await trio.to_thread.run_sync(self._get, "/api/genesis/raw")

    async def decision(self, height: int) -> DecisionPacket | None:
        block = await trio.to_thread.run_sync(self._get, f"/api/blocks/{height}/raw")
        cert = await trio.to_thread.run_sync(self._get, f"/api/blocks/{height}/certificate")
        if block is None or cert is None:
            return None
        return _packet(block, cert, height)

    async def content(
        self, digest: bytes, *, size: int | None = None, key: bytes | None = None
    ) -> bytes | None:
        return await trio.to_thread.run_sync(self._get, f"/api/content/{digest.hex()}")


class DhtSource:
    """The Kademlia DHT, joined through one peer's multiaddr, as a client with a throwaway peer
    id. The DHT layer refuses a decided-block record whose certificate is not a quorum of the set
    `vset_for` names (the replay's own state: it fetches a height only once it holds that set),
    so a forged record is never even handed over; the replay checks everything again."""

    def __init__(self, host: Any, dht: Any) -> None:
        self.host, self.dht = host, dht
        self.label = "dht"
        self.vset_for: Callable[[int], ValidatorSet | None] = lambda height: None

    @classmethod
    @asynccontextmanager
    async def joined(cls, addr: str, netuid: int) -> AsyncIterator[DhtSource]:
        import secrets

        import multiaddr
        from libp2p.peer.peerinfo import info_from_p2p_addr

        from dht.kad import DhtNode
        from dht.localnet import close_connections, make_host

        host = make_host(f"auditor-{secrets.token_hex(8)}")
        src: DhtSource | None = None

        def vset_for(height: int) -> ValidatorSet | None:
            return None if src is None else src.vset_for(height)

        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            except Exception as exc:
                raise SourceError(
                    f"--from-dht {addr!r} is not a multiaddr with /p2p/<peer id>: {exc}"
                ) from None
            node = DhtNode(host, netuid, vset_for, timeout=DHT_TIMEOUT)
            async with node.running():
                with trio.move_on_after(DHT_TIMEOUT):
                    await host.connect(info)
                if not host.get_network().get_connections(info.peer_id):
                    raise SourceError(f"cannot connect to {addr}")
                for _ in range(20):  # identify must run before the routing table takes the peer
                    if await node.add_peer(info.peer_id):
                        break
                    await trio.sleep(0.25)
                src = cls(host, node)
                src.label = f"dht via {addr}"
                try:
                    yield src
                finally:
                    await close_connections(host)

    async def genesis(self, digest: bytes | None) -> bytes | None:
        if digest is None:
            raise SourceError("the DHT holds the genesis record by its hash: pass --genesis-hash")
        return await self.content(digest)

    async def decision(self, height: int) -> DecisionPacket | None:
        with trio.move_on_after(4 * DHT_TIMEOUT):
            return await self.dht.get_decision(self.dht.netuid, height)
        return None

    async def content(
        self, digest: bytes, *, size: int | None = None, key: bytes | None = None
    ) -> bytes | None:
        from dht.kad import BlobNotFound
        from dht.records import NS_MANIFEST, RECORD_VALUE_CAP, RecordRefused, content_key

        chunked = key is not None and size is not None and size > RECORD_VALUE_CAP
        dht_key = f"/{NS_MANIFEST}/{key.hex()}" if chunked and key is not None else content_key(key or digest)
        try:
            with trio.move_on_after(4 * DHT_TIMEOUT):
                return await self.dht.get_blob(dht_key, size=size, sha256=digest)
        except BlobNotFound:
            return None
        except RecordRefused as exc:
            raise SourceError(f"content {digest.hex()[:16]}: {exc}") from None
        return None


def _read_only(path: Path) -> sqlite3.Connection | None:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0) if path.exists() else None


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
