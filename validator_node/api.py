"""The node's HTTP interface: JSON status API, Prometheus `/metrics`, and the dashboard at `/`.

An ASGI app (Starlette) served by hypercorn on the node's own trio loop: GET and HEAD only,
request heads of at most 8 KiB, idle and slow connections closed after 10 s, at most 64
connections at once, nothing cached. Handlers read the node's state on the event loop and never
block it. It binds to 127.0.0.1 unless the operator configures otherwise, and is off unless a port
is given.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from validator_node.block import Block
from validator_node.pipeline.messages import EMPTY_BODY, BlockBody
from validator_node.pipeline.state import epoch_scores, stake_weighted_median
from wire.codec import decode, encode
from wire.keys import ss58_of

if TYPE_CHECKING:
    from consensus.validators import ValidatorSet
    from validator_node.app import Application
    from validator_node.metrics import Metrics
    from validator_node.store import NodeStore


class NodeView(Protocol):
    """What the API reads of a running node: the API depends on this, not on the node module,
    so the node can build its API without the two importing each other."""

    app: Application
    store: NodeStore
    metrics: Metrics
    transport: Any  # .book.links: hotkey -> link with .peer_id
    aggregator: Any
    replica: Any  # .peer_heights: hotkey -> highest height it signed for
    hotkey: Any  # .public_key
    peer_last_seen: dict[bytes, float]

    @property
    def vset(self) -> ValidatorSet: ...

    def status(self) -> dict[str, Any]: ...


log = logging.getLogger("validator_node.api")

MAX_REQUEST = 8192
MAX_CONNECTIONS = 64
REQUEST_TIMEOUT = 10.0


class NotFound(Exception):
    pass


CBOR = "application/cbor"


class Raw(bytes):
    """A handler's answer served as it is (canonical CBOR or module bytes), not as JSON: what an
    auditor checks by hash and signature must be the decided bytes, not a summary of them."""

    media_type = CBOR


def _ss58(key: bytes) -> str:
    try:
        return ss58_of(key)
    except Exception:
        return key.hex()


class NodeApi:
    def __init__(self, node: NodeView) -> None:
        self.node = node
        self.routes: dict[str, Callable[[list[str], dict[str, list[str]]], Any]] = {
            "status": self.status,
            "peers": self.peers,
            "blocks": self.blocks,
            "challenges": self.challenges,
            "registry": self.registry,
            "submissions": self.submissions,
            "weights": self.weights,
            "evidence": self.evidence,
            "evaluations": self.evaluations,
            "leaderboard": self.leaderboard,
            "genesis": self.genesis,
            "content": self.content,
        }

    # --- handlers (each returns a JSON-able value) --------------------------------------------

    def status(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        st = self.node.status()
        st["validators"] = [{"hotkey": _ss58(v.hotkey), "stake": v.stake} for v in self.node.vset.validators]
        st["quorum_count"] = self.node.vset.quorum_count()
        st["leader"] = _ss58(bytes.fromhex(st["leader"]))
        return st

    def peers(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        """Every validator of the current set: linked or not, the highest height it signed a
        verified statement for, and how long ago its last frame arrived."""
        links = self.node.transport.book.links
        heights = self.node.replica.peer_heights
        seen = self.node.peer_last_seen
        now = time.time()
        out = []
        for v in self.node.vset.validators:
            hk = v.hotkey
            link = links.get(hk)
            me = hk == self.node.hotkey.public_key
            out.append(
                {
                    "hotkey": _ss58(hk),
                    "peer_id": self.node.transport.peer_id if me else None if link is None else link.peer_id,
                    "linked": link is not None,
                    "self": me,
                    "height": heights.get(hk),
                    "last_seen_s": None if hk not in seen else round(now - seen[hk], 1),
                }
            )
        return out

    def evaluations(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        """This node's evaluations since it started, per challenge: results by kind and fuel."""
        counts = self.node.metrics.counters.get("evaluations_total", {})
        fuel = self.node.metrics.counters.get("evaluation_fuel_total", {})
        out: dict[str, dict[str, Any]] = {}
        for labels, n in counts.items():
            lab = dict(labels)
            row = out.setdefault(lab.get("challenge", "?"), {"results": {}, "fuel": 0})
            row["results"][lab.get("result", "?")] = int(n)
        for labels, n in fuel.items():
            out.setdefault(dict(labels).get("challenge", "?"), {"results": {}, "fuel": 0})["fuel"] = int(n)
        return {cid: out[cid] for cid in sorted(out)}

    def blocks(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        """`/api/blocks` (newest first), `/api/blocks/N` (a summary), and the decided bytes an
        auditor verifies: `/api/blocks/N/raw` (the block, whose sha256 the certificate signs) and
        `/api/blocks/N/certificate` (the canonical CBOR commit certificate)."""
        store = self.node.store
        if len(parts) == 2 and parts[1] in ("raw", "certificate"):
            d = store.decision(int(parts[0]))
            if d is None:
                raise NotFound(f"no decided block at height {parts[0]}")
            return Raw(d.block if parts[1] == "raw" else encode(d.certificate))
        if parts:
            return self._block(int(parts[0]))
        tip, _ = store.tip()
        limit = min(int(q.get("limit", ["20"])[0]), 100)
        return [self._block(h, full=False) for h in range(tip, max(tip - limit, 0), -1)]

    def _block(self, height: int, full: bool = True) -> Any:
        d = self.node.store.decision(height)
        if d is None:
            raise NotFound(f"no decided block at height {height}")
        block = decode(d.block, Block)
        body = EMPTY_BODY if not block.body else decode(block.body, BlockBody)
        out: dict[str, Any] = {
            "height": block.height,
            "hash": d.certificate.block_hash.hex(),
            "parent": block.parent.hex(),
            "proposer": _ss58(block.proposer),
            "chain_block": block.chain_block,
            "view": d.certificate.view,
            "submissions": len(body.submissions),
            "attestations": len(body.attestations),
            "registry_actions": [i.action.op for i in body.registry],
            "weights_epoch": None if body.weights is None else body.weights.epoch,
            "signatures": len(d.certificate.signatures),
        }
        if full:
            out["certificate"] = {
                "phase": d.certificate.phase,
                "view": d.certificate.view,
                "block_hash": d.certificate.block_hash.hex(),
                "signatures": [
                    {"signer": _ss58(s.signer), "signature": s.signature.hex()}
                    for s in d.certificate.signatures
                ],
            }
        return out

    def genesis(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        """`/api/genesis/raw`: the genesis record's canonical bytes (check their sha256 against the
        network's genesis hash); `/api/genesis`: its hash and the public inputs in it."""
        g = self.node.app.genesis
        if parts == ["raw"]:
            return Raw(encode(g))
        return {
            "hash": self.node.app.genesis_hash.hex(),
            "netuid": g.netuid,
            "epoch_blocks": g.epoch_blocks,
            "chain_block": g.chain_block,
            "owner": _ss58(g.owner),
            "mechanism_count": g.mechanism_count,
            "validators": [{"hotkey": _ss58(v.hotkey), "stake": v.stake} for v in g.validators],
        }

    def content(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        """`/api/content/<sha256 hex>`: a module the decided registry holds, or a one-record blob
        (a payload by reference) this node's DHT store keeps, by its hash."""
        if len(parts) != 1:
            raise NotFound("ask for /api/content/<sha256 hex>")
        digest = bytes.fromhex(parts[0])
        if len(digest) != 32:
            raise ValueError("a content hash is 64 hex digits")
        wasm = self.node.app.state.modules.get(digest)
        if wasm is not None:
            return Raw(wasm)
        dht = getattr(self.node, "dht", None)
        value = None if dht is None or dht.store is None else dht.store.get(f"/bt-content/{digest.hex()}")
        if value is None:
            raise NotFound(f"no content {digest.hex()} here")
        return Raw(value)

    def challenges(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        out = []
        for entry in self.node.app.state.registry.challenges:
            m = entry.manifest
            out.append(
                {
                    "id": m.challenge_id,
                    "name": m.name,
                    "version": m.version,
                    "status": entry.status,
                    "wasm_sha256": m.wasm_sha256.hex(),
                    "wasm_size": m.wasm_size,
                    "abi_version": m.abi_version,
                    "emission_share_ppb": m.emission_share_ppb,
                    "mechanism_id": m.mechanism_id,
                    "activation_epoch": m.activation_epoch,
                    "policy": m.policy.to_dict(),
                    "registered_at": entry.registered_at,
                    "updated_at": entry.updated_at,
                }
            )
        return out

    def registry(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        """What an owner needs before signing the next action: the key validators accept, the
        next free nonce (above the decided one and every pooled one), and each mechanism's
        emission share still free for another active challenge."""
        from registry import PPB
        from validator_node.pipeline.pools import registry_nonce

        reg = self.node.app.state.registry
        pooled = sorted(
            n for n in (registry_nonce(i) for i in self.node.app.registry_pool.values()) if n >= 0
        )
        used: dict[int, int] = {}
        for m in reg.active():
            used[m.mechanism_id] = used.get(m.mechanism_id, 0) + m.emission_share_ppb
        return {
            "owner": _ss58(reg.sudo),
            "last_nonce": reg.last_nonce,
            "pooled_nonces": pooled,
            "next_nonce": max([reg.last_nonce, *pooled]) + 1,
            "mechanism_count": reg.mechanism_count,
            "shares": [
                {"mechanism_id": mech, "active_ppb": used.get(mech, 0), "free_ppb": PPB - used.get(mech, 0)}
                for mech in range(reg.mechanism_count)
            ],
            "challenges": {e.manifest.challenge_id: e.status for e in reg.challenges},
        }

    def submissions(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        state = self.node.app.state
        if parts:
            sid = bytes.fromhex(parts[0])
            sub = state.submissions.get(sid)
            if sub is None:
                raise NotFound("no such submission in the current epoch")
            return self._submission(sid)
        return [self._submission(sid) for sid in sorted(state.submissions)]

    def _submission(self, sid: bytes) -> Any:
        state = self.node.app.state
        sub = state.submissions[sid]
        atts = state.attestations.get(sid, {})
        return {
            "id": sid.hex(),
            "challenge": sub.challenge_id,
            "miner": _ss58(sub.miner),
            "uid": sub.uid,
            "height": sub.height,
            "payload_bytes": len(sub.payload) if sub.payload_ref is None else sub.payload_ref.size,
            "payload_sha256": None if sub.payload_ref is None else sub.payload_ref.sha256.hex(),
            "attestations": {_ss58(v): s for v, s in sorted(atts.items())},
            "aggregate": stake_weighted_median(atts, self.node.app.vset_for(sub.height)),
        }

    def leaderboard(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        """Per challenge, miners by their best aggregated score: this epoch so far, and the last
        closed epoch (whose scores produced the current weights)."""
        app = self.node.app  # the state holds the tip's epoch: score it with that epoch's set
        current = epoch_scores(app.state, app.vset_for(max(app.tip_height, 1)), self.node.aggregator)
        last = self.node.app.last_epoch_scores

        info = app.state.epoch_info
        hotkeys = {} if info is None else {n.uid: _ss58(n.hotkey) for n in info.neurons}

        def board(scores: dict[str, dict[int, int]]) -> dict[str, list[dict[str, Any]]]:
            return {
                cid: [
                    {"uid": u, "hotkey": hotkeys.get(u), "score": sc}
                    for u, sc in sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))
                ]
                for cid, per in sorted(scores.items())
            }

        return {
            "epoch": self.node.app.state.epoch_of(self.node.app.tip_height + 1),
            "current": board(current),
            "last_epoch": None if last is None else last[0],
            "last": {} if last is None else board(last[1]),
        }

    def weights(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        decided = self.node.app.state.weights
        epochs = [int(q["epoch"][0])] if "epoch" in q else sorted(decided)
        out = []
        for e in epochs:
            w = decided.get(e)
            if w is None:
                if "epoch" in q:
                    raise NotFound(f"no decided weights for epoch {e}")
                continue
            out.append(
                {
                    "epoch": e,
                    "rows": [
                        {"mechid": r.mechid, "uids": list(r.uids), "weights": list(r.weights)} for r in w.rows
                    ],
                }
            )
        info = self.node.app.state.epoch_info
        return {
            "decided": out,
            "submitted": self.node.store.submitted_weights(),
            # the remainder of every row goes to the owner's UID: that weight is the burn
            "owner_uid": None if info is None else info.owner_uid,
        }

    def evidence(self, parts: list[str], q: dict[str, list[str]]) -> Any:
        rows = self.node.store.db.execute("SELECT height, data FROM evidence ORDER BY height DESC LIMIT 100")
        from consensus.messages import Equivocation

        out = []
        for height, data in rows:
            ev = decode(bytes(data), Equivocation)
            out.append({"height": height, "validator": _ss58(ev.first.signer), "first": ev.first.body.hex(),
                        "second": ev.second.body.hex()})  # fmt: skip
        return out

    # --- HTTP ---------------------------------------------------------------------------------

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of `path` (with its query string)."""
        url = urlsplit(path)
        q = parse_qs(url.query)
        if url.path in ("/", "/index.html"):
            return 200, "text/html; charset=utf-8", dashboard_html()
        if url.path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self.node.metrics.render().encode()
        parts = [p for p in url.path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api" and parts[1] in self.routes:
            try:
                value = self.routes[parts[1]](parts[2:], q)
            except NotFound as exc:
                return 404, "application/json", json.dumps({"error": str(exc)}).encode()
            except (ValueError, KeyError) as exc:
                return 400, "application/json", json.dumps({"error": f"bad request: {exc}"}).encode()
            if isinstance(value, Raw):
                return 200, Raw.media_type, bytes(value)
            return 200, "application/json", json.dumps(value, sort_keys=True).encode()
        return 404, "application/json", json.dumps({"error": f"no route {url.path}"}).encode()

    def asgi_app(self) -> Starlette:
        """The API as an ASGI application: GET (and HEAD) only, every response uncached.

        Handlers are `async` on purpose: they read the node's state, which only the trio loop may
        touch, so they must not run in a worker thread (Starlette's choice for sync handlers)."""

        async def get(request: Request) -> Response:
            self.node.metrics.inc("http_requests_total")
            if _head_size(request) > MAX_REQUEST:  # h11 refuses only heads still incomplete
                return Response(b"request too large", 431, media_type="text/plain", headers=SECURITY_HEADERS)
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            status, ctype, body = self.respond(path)
            return Response(body, status_code=status, media_type=ctype, headers=SECURITY_HEADERS)

        async def refused(request: Request, exc: Exception) -> Response:
            code = exc.status_code if isinstance(exc, HTTPException) else 500
            return Response(
                json.dumps({"error": _REASONS.get(code, "error")}),
                status_code=code,
                media_type="application/json",
                headers={**SECURITY_HEADERS, **({"Allow": "GET, HEAD"} if code == 405 else {})},
            )

        return Starlette(
            routes=[Route("/{path:path}", get, methods=["GET", "HEAD"])],
            exception_handlers={HTTPException: refused},
        )

    def server_config(self, host: str, port: int) -> HypercornConfig:
        """The bounds of the old hand-written server, as hypercorn's settings: a request's head is
        at most MAX_REQUEST bytes (431 beyond, from h11), an idle or slow connection is closed
        after REQUEST_TIMEOUT, and HTTP/2 streams per connection are few (the cap on connections
        is `serve`'s own, hypercorn has none)."""
        config = HypercornConfig()
        config.bind = [f"{host}:{port}"]
        config.h11_max_incomplete_size = MAX_REQUEST
        config.keep_alive_timeout = REQUEST_TIMEOUT
        config.read_timeout = int(REQUEST_TIMEOUT)
        config.h2_max_concurrent_streams = 8
        config.h2_max_header_list_size = MAX_REQUEST
        config.max_app_queue_size = 4
        config.accesslog = None
        config.errorlog = logging.getLogger("validator_node.api")
        return config

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the API with hypercorn on trio, at most MAX_CONNECTIONS connections at once (more
        wait in the listen backlog): hypercorn's own `serve` has no such cap, so its connection
        handler runs here under a limiter (hypercorn is pinned; tests/node/test_api.py covers it)."""
        from hypercorn.trio.tcp_server import TCPServer
        from hypercorn.trio.worker_context import WorkerContext
        from hypercorn.utils import wrap_app

        config = self.server_config(host, port)
        app = wrap_app(self.asgi_app(), config.wsgi_max_body_size, "asgi")
        context = WorkerContext(None)
        limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            from validator_node.startup import StartupError

            why = exc.strerror or str(exc)
            raise StartupError(
                f"cannot listen for the HTTP API on {host}:{port} (--api.host/--api.port): {why}"
            ) from None
        bound = listeners[0].socket.getsockname()[1]
        log.info("HTTP API and dashboard on http://%s:%d/", host, bound)
        task_status.started(bound)
        metrics = self.node.metrics

        async def handler(stream: trio.SocketStream) -> None:
            if limiter.available_tokens == 0:
                metrics.inc("http_connections_waited_total")  # over the cap: it waits for a slot
            async with limiter:
                metrics.set("http_connections_open", limiter.borrowed_tokens)
                try:
                    await TCPServer(app, config, context, {}, stream)  # type: ignore[arg-type]
                except Exception:
                    log.exception("HTTP connection failed")
            metrics.set("http_connections_open", limiter.borrowed_tokens)

        await trio.serve_listeners(handler, listeners)


SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _head_size(request: Request) -> int:
    """The size of the request's head as received: target and header lines."""
    scope = request.scope
    size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
    return size + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ()))


_REASONS = {400: "bad request", 404: "not found", 405: "only GET and HEAD", 431: "request too large"}


def dashboard_html() -> bytes:
    return resources.files("validator_node").joinpath("dashboard.html").read_bytes()
