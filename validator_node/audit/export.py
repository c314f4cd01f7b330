"""`audit export`: the network's public bytes in a folder, for any tool (and `audit replay
--from-export`).

Layout (every `.cbor` file is exactly the bytes the network decided or signed, canonical CBOR):

    manifest.json               format, netuid, genesis hash, heights, files, wire message versions
    genesis.cbor                the genesis record (its sha256 is the genesis hash)
    blocks/<h>.cbor             decided block h (its sha256 is the certificate's block_hash)
    certificates/<h>.cbor       block h's commit certificate (`consensus.certificate`)
    modules/<sha256>.wasm       each module a registry action in these blocks carried
    payloads/<sha256>.bin       each payload submitted by reference, when a source serves it

The export follows the network's validator sets as it goes: it applies every decided block from
height 1 (without running modules: weights are taken as decided) and checks each certificate
against the set that state names, because the DHT hands out a decided block only to a reader who
knows that set. The reader checks everything again (`audit replay --from-export DIR` does).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from validator_node.audit.sources import Source, SourceError
from validator_node.block import Block
from validator_node.pipeline.messages import EMPTY_BODY, BlockBody, Submission
from wire.codec import decode, encode
from wire.envelope import open_envelope

FORMAT = "bt-platform-audit-export/1"


class ExportError(RuntimeError):
    pass


def _follower(record: Any) -> Any:
    """An application that tracks decided state (and so each height's validator set) without a
    sandbox; its complaints about weights it cannot derive are not the export's business."""
    import logging

    from validator_node.app import Application

    logging.getLogger("validator_node.app").setLevel(logging.ERROR)
    return Application(record)


def _follow(app: Any, height: int, packet: Any) -> None:
    from validator_node.audit.replay import uncertified
    from validator_node.pipeline.state import BlockRejected

    vset = app.known_vset(height)
    why = (
        "no known validator set certifies it"
        if vset is None
        else uncertified(packet, height, vset, app.netuid)
    )
    if why is not None:
        raise ExportError(f"height {height}: {why}")
    try:
        app.apply_decided(height, packet.block)
    except BlockRejected as exc:
        raise ExportError(f"height {height}: {exc}") from None


def _versions() -> dict[str, int]:
    """The wire messages an export's files are made of, with the versions this code writes."""
    from consensus.messages import Certificate, DecisionPacket
    from validator_node.genesis import GenesisRecord

    out = {}
    for cls in (GenesisRecord, Block, BlockBody, Certificate, DecisionPacket, Submission):
        spec = cls.__wire__  # type: ignore[attr-defined]
        out[spec.tag] = spec.version
    return out


async def export(
    source: Source, out: Path, first: int, last: int, genesis_hash: bytes | None
) -> dict[str, Any]:
    """Write heights first..last (and the genesis record) to `out`; return the manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} is not empty")
    for sub in ("blocks", "certificates", "modules", "payloads"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    raw = await source.genesis(genesis_hash)
    if raw is None:
        raise ExportError(f"{source.label} has no genesis record")
    digest = hashlib.sha256(raw).hexdigest()
    if genesis_hash is not None and digest != genesis_hash.hex():
        raise ExportError(f"the genesis record served hashes to {digest}, not {genesis_hash.hex()}")
    (out / "genesis.cbor").write_bytes(raw)
    from validator_node.genesis import GenesisRecord

    record = decode(raw, GenesisRecord)
    netuid = record.netuid
    follower = _follower(record)
    if hasattr(source, "vset_for"):
        source.vset_for = follower.known_vset
    files = ["genesis.cbor"]
    missing: list[str] = []
    for height in range(1, last + 1):
        packet = await source.decision(height)
        if packet is None:
            raise ExportError(f"{source.label} has no decided block at height {height}")
        _follow(follower, height, packet)
        if height < first:
            continue
        (out / f"blocks/{height}.cbor").write_bytes(packet.block)
        (out / f"certificates/{height}.cbor").write_bytes(encode(packet.certificate))
        files += [f"blocks/{height}.cbor", f"certificates/{height}.cbor"]
        block = decode(packet.block, Block)
        body = EMPTY_BODY if not block.body else decode(block.body, BlockBody)
        for item in body.registry:
            if item.module is not None:
                name = f"modules/{hashlib.sha256(item.module).hexdigest()}.wasm"
                (out / name).write_bytes(item.module)
                files.append(name)
        for env in body.submissions:
            ref = open_envelope(env, Submission, netuid).payload_ref
            if ref is None:
                continue
            name = f"payloads/{ref.sha256.hex()}.bin"
            try:
                data = await source.content(ref.sha256, size=ref.size, key=ref.dht_key)
            except SourceError:
                data = None
            if data is None or hashlib.sha256(data).digest() != ref.sha256:
                missing.append(name)
                continue
            (out / name).write_bytes(data)
            files.append(name)
    manifest = {
        "format": FORMAT,
        "netuid": netuid,
        "genesis_hash": digest,
        "from": first,
        "to": last,
        "source": source.label,
        "messages": _versions(),
        "files": sorted(set(files)),
        "missing": sorted(set(missing)),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest
