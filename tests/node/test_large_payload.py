"""A payload above the inline cap: the miner hands it to one validator, the block carries only its
reference, and every other validator fetches the bytes from the DHT to evaluate them.

Real processes, real libp2p and KadDHT on loopback, the `validator-node miner submit` CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import trio

from validator_node import devnet
from validator_node.p2p.submit_client import submit_items
from validator_node.p2p.submit_replies import accepted

ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
EPOCH_BLOCKS = 30  # room for the DHT round trips and the attestations inside one epoch


def api(v: devnet.DevnetValidator, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{v.api_port}{path}", timeout=10) as r:
        return json.loads(r.read())


def metric(root: Path, v: devnet.DevnetValidator, line_start: str) -> float:
    text = (root / "data" / str(devnet.NETUID) / v.ss58 / "metrics.prom").read_text()
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line_start))


def hostile_large_items(root: Path, epoch: int, payload: bytes) -> list[bytes]:
    from validator_node.payloads import dht_key_of
    from validator_node.pipeline.messages import LargeSubmission, PayloadRef, Submission
    from wire.codec import encode
    from wire.envelope import SignedEnvelope, seal
    from wire.keys import Hotkey

    miner = Hotkey.from_wallet("miner0", "default", root / "wallets")
    ref = PayloadRef(hashlib.sha256(payload).digest(), len(payload), dht_key_of(payload))
    tampered = payload[:-1] + bytes([payload[-1] ^ 1])
    wrong_key = PayloadRef(ref.sha256, ref.size, hashlib.sha256(b"elsewhere").digest())

    def signed(nonce: int, r: PayloadRef | None, inline: bytes = b"") -> SignedEnvelope:
        return seal(Submission("lz-compress", epoch, nonce, inline, r), miner, devnet.NETUID)

    return [
        encode(LargeSubmission(signed(10, ref), tampered)),
        encode(LargeSubmission(signed(11, wrong_key), payload)),
        encode(LargeSubmission(signed(12, None, b"inline"), payload)),
        encode(signed(13, ref)),  # a bare reference: nobody may hold the bytes
    ]


def test_a_large_payload_travels_by_hash_and_every_validator_evaluates_it(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    vals, _ = devnet.create(root, 4, miners=1)
    wait = devnet.wait_until
    status = devnet.read_status
    with devnet.Processes(root, vals, epoch_blocks=EPOCH_BLOCKS).start_all():
        wait(lambda: status(root, vals[0])["height"] >= 1, 60, "the first block")
        assert all(map(accepted, devnet.publish_registry(root, vals[0])))
        wait(lambda: all(len(status(root, v)["challenges"]) == 5 for v in vals), 30, "activation")
        wait(
            lambda: (
                {status(root, v)["height"] % EPOCH_BLOCKS for v in vals} <= {1, 2, 3, 4}
                and len({status(root, v)["next_epoch"] for v in vals}) == 1
            ),
            60,
            "a fresh epoch",
        )
        epoch = status(root, vals[0])["next_epoch"]
        payload = hashlib.shake_256(b"a large lz-compress submission").digest(600 * 1024)
        (tmp_path / "payload.bin").write_bytes(payload)
        reply = subprocess.run(
            [
                sys.executable, "-m", "validator_node.cli", "miner", "submit",
                "--netuid", str(devnet.NETUID), "--challenge", "lz-compress", "--epoch", str(epoch),
                "--file", str(tmp_path / "payload.bin"), "--validator", vals[0].multiaddr(),
                "--wallet.name", "miner0", "--wallet.path", str(root / "wallets"),
            ],
            capture_output=True, text=True, env=ENV, timeout=60,
        )  # fmt: skip
        assert reply.returncode == 0 and reply.stdout.strip() == "ok", reply.stdout + reply.stderr
        digest = hashlib.sha256(payload).hexdigest()
        # bytes that are not the ones the miner signed for, or a reference naming another DHT
        # key, are refused at the door and not kept (only the honest payload is stored below)
        replies = trio.run(submit_items, vals[0].multiaddr(), hostile_large_items(root, epoch, payload))
        assert replies == [
            "refused: the payload does not match the signed reference",
            "refused: the reference names another DHT key than the payload's",
            "refused: a large submission must carry a payload reference and no inline bytes",
            "refused: a submission by reference must be sent with its payload (a large submission)",
        ], replies

        def attested_everywhere() -> bool:
            for v in vals:
                subs = [s for s in api(v, "/api/submissions") if s["payload_sha256"] == digest]  # type: ignore[union-attr]
                if len(subs) != 1 or len(subs[0]["attestations"]) < 4:
                    return False
            return True

        wait(attested_everywhere, 60, "all four validators' attestations for the large submission")
        (sub,) = [s for s in api(vals[2], "/api/submissions") if s["payload_sha256"] == digest]  # type: ignore[union-attr]
        assert sub["payload_bytes"] == len(payload)
        # evaluation is deterministic, so fetched bytes give the scores the miner's validator got
        assert len(set(sub["attestations"].values())) == 1
        decided = api(vals[1], f"/api/blocks/{sub['height']}")
        assert len(json.dumps(decided)) < 64 * 1024  # the block carried the reference, not 600 KiB
    for v in vals[1:]:
        assert metric(root, v, 'validator_payloads_stored_total{source="dht"}') >= 1
        assert metric(root, v, "validator_payloads_unavailable_total") == 0
    assert metric(root, vals[0], 'validator_payloads_stored_total{source="miner"}') == 1
