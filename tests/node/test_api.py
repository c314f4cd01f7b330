"""The HTTP API, Prometheus metrics and the dashboard (in headless Chromium) of running validators."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from validator_node import devnet
from validator_node.p2p.submit_replies import accepted

ENV = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
EPOCH_BLOCKS = 12


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[devnet.DevnetValidator]]]:
    root = tmp_path_factory.mktemp("api") / "dn"
    vals, _ = devnet.create(root, 4, miners=4)
    with devnet.Processes(root, vals, epoch_blocks=EPOCH_BLOCKS).start_all():
        wait(lambda: devnet.read_status(root, vals[0])["height"] >= 1, 60)
        assert all(map(accepted, devnet.publish_registry(root, vals[0])))
        wait(lambda: all(len(devnet.read_status(root, v)["challenges"]) == 5 for v in vals), 30)
        miners = devnet.Miners(root, 4, vals)
        # submit right after an epoch opens, so the whole epoch is left to evaluate and attest
        wait(
            lambda: (
                {devnet.read_status(root, v)["height"] % EPOCH_BLOCKS for v in vals} <= {1, 2, 3}
                and len({devnet.read_status(root, v)["next_epoch"] for v in vals}) == 1
            ),
            30,
        )
        status = devnet.read_status(root, vals[0])
        epoch = status["next_epoch"]
        miners.submit(epoch, bytes.fromhex(status["epoch_seed"]))
        assert miners.sent == 4 * (3 + 4), miners.refused  # 3 example payloads, 4 BitDefense answers
        # wait for that epoch's weights to be decided and set
        wait(lambda: devnet.read_status(root, vals[0])["height"] >= (epoch + 1) * EPOCH_BLOCKS + 1, 60)
        yield root, vals


wait = devnet.wait_until


def test_json_api(running: tuple[Path, list[devnet.DevnetValidator]]) -> None:
    _, vals = running
    base = f"http://127.0.0.1:{vals[0].api_port}"
    code, body = get(base + "/api/status")
    st = json.loads(body)
    assert code == 200 and st["hotkey"] == vals[0].ss58 and st["peers"] == 3 and st["height"] >= 1
    assert len(st["validators"]) == 4 and st["quorum_count"] == 2  # 4000 + 3000 of 10000 TAO
    code, body = get(base + "/api/blocks/1")
    block = json.loads(body)
    assert code == 200 and block["height"] == 1 and len(block["certificate"]["signatures"]) >= 2
    assert json.loads(get(base + "/api/blocks?limit=3")[1])[0]["height"] >= block["height"]
    challenges = json.loads(get(base + "/api/challenges")[1])
    assert {c["id"] for c in challenges} == {
        "maxsat",
        "lz-compress",
        "tsp-tour",
        "allways-swap",
        "bitdefense-invariants",
    }
    assert all(c["status"] == "active" for c in challenges)
    weights = json.loads(get(base + "/api/weights")[1])
    assert weights["decided"] and weights["submitted"] and weights["submitted"][0]["result"] == "ok"
    scored = [w for w in weights["decided"] if len(w["rows"][0]["uids"]) > 1]
    assert scored, "no epoch's weights reached the miners"
    epoch = scored[0]["epoch"]
    assert json.loads(get(base + f"/api/weights?epoch={epoch}")[1])["decided"][0]["epoch"] == epoch
    board = json.loads(get(base + "/api/leaderboard")[1])
    assert board["last_epoch"] is not None and board["last"], board
    assert all(row["score"] > 0 for rows in board["last"].values() for row in rows)
    peers = json.loads(get(base + "/api/peers")[1])
    assert len(peers) == 4 and all(p["peer_id"].startswith("12D3") for p in peers)
    others = [p for p in peers if not p["self"]]
    assert len(others) == 3 and all(p["linked"] and p["height"] >= 1 for p in others), peers
    assert all(p["last_seen_s"] is not None and p["last_seen_s"] < 60 for p in others), peers
    assert all(
        row["hotkey"] and row["hotkey"].startswith("5") for rows in board["last"].values() for row in rows
    )
    assert weights["owner_uid"] == 0
    evals = json.loads(get(base + "/api/evaluations")[1])
    assert evals["maxsat"]["results"].get("ok", 0) > 0 and evals["maxsat"]["fuel"] > 0, evals
    assert st["version"] == "0.1.0" and st["epoch_blocks"] == EPOCH_BLOCKS
    last = json.loads(get(base + "/api/status")[1])["last_weights_result"]  # after the submitted rows
    assert last["result"] == "ok" and last["chain_block"] > 0, last
    assert get(base + "/api/evidence")[0] == 200
    # errors are clear and never take the node down
    assert get(base + "/api/blocks/999999")[0] == 404
    assert get(base + "/api/blocks/notanumber")[0] == 400
    assert get(base + "/api/submissions/zz")[0] == 400
    assert get(base + "/api/nope")[0] == 404
    assert get(base + "/api/weights?epoch=9999")[0] == 404


def test_raw_bytes_for_auditors(running: tuple[Path, list[devnet.DevnetValidator]]) -> None:
    """Issue 15: the decided bytes, not summaries: a block whose sha256 the certificate signs,
    the certificate, the genesis record, modules by hash; the listen multiaddrs in the status;
    and `audit replay --from-api` re-derives an epoch from them alone (exit 0)."""
    import hashlib

    from consensus.certificates import verify_certificate
    from consensus.messages import Certificate
    from validator_node.genesis import GenesisRecord
    from wire.codec import decode

    root, vals = running
    base = f"http://127.0.0.1:{vals[0].api_port}"
    code, raw = get(base + "/api/genesis/raw")
    genesis_hash = hashlib.sha256(raw).hexdigest()
    assert code == 200 and genesis_hash == json.loads(get(base + "/api/status")[1])["genesis"]
    record = decode(raw, GenesisRecord)
    assert json.loads(get(base + "/api/genesis")[1])["epoch_blocks"] == record.epoch_blocks == EPOCH_BLOCKS
    block = get(base + "/api/blocks/1/raw")[1]
    cert = decode(get(base + "/api/blocks/1/certificate")[1], Certificate)
    assert cert.block_hash == hashlib.sha256(block).digest()
    verify_certificate(cert, record.validator_set(), record.netuid, height=1)
    challenge = json.loads(get(base + "/api/challenges")[1])[0]
    code, wasm = get(base + f"/api/content/{challenge['wasm_sha256']}")
    assert code == 200 and hashlib.sha256(wasm).hexdigest() == challenge["wasm_sha256"]
    assert get(base + f"/api/content/{'00' * 32}")[0] == 404
    assert get(base + "/api/content/abc")[0] == 400
    assert get(base + "/api/blocks/999999/raw")[0] == 404
    listen = json.loads(get(base + "/api/status")[1])["listen"]
    assert listen and all(a.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/12D3" in a for a in listen), listen

    epoch = json.loads(get(base + "/api/status")[1])["epoch"] - 1
    out = subprocess.run(
        [sys.executable, "-m", "validator_node.cli", "audit", "replay", "--from-api", base,
         "--epoch", str(epoch), "--genesis-hash", genesis_hash, "--chain", str(root / "chain.sqlite"),
         "--rerun-evaluations", "--json"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout)
    items = [c["item"] for c in report["checks"]]
    assert sum(i.startswith("height ") for i in items) == (epoch + 1) * EPOCH_BLOCKS
    assert f"epoch {epoch} weights" in items and any(i.startswith("chain record #") for i in items)
    reruns = [c for c in report["checks"] if c.get("rerun_score") is not None]
    assert reruns and all(c["rerun_score"] == c["median"] for c in reruns)


def test_http_server_refuses_abuse(running: tuple[Path, list[devnet.DevnetValidator]]) -> None:
    _, vals = running
    port = vals[0].api_port

    def raw(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            return s.recv(200)

    # (HTTP/1.1 requires a Host header: a request without one is a 400, as h11 has it)
    assert raw(b"POST /api/status HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert raw(b"GET /api/status HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 431")
    assert raw(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 10_000).startswith(b"HTTP/1.1 431")
    assert get(f"http://127.0.0.1:{port}/api/status")[0] == 200


def test_http_connections_are_capped(running: tuple[Path, list[devnet.DevnetValidator]]) -> None:
    """64 connections at once; more wait (in the backlog) until one closes, and an idle one is
    closed after 10 s, so a client holding idle sockets delays the API but cannot take it down."""
    from validator_node.api import MAX_CONNECTIONS

    _, vals = running
    port = vals[3].api_port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(MAX_CONNECTIONS + 6)]
    try:
        # served once idle ones time out (10 s)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=40) as r:
            code, body = r.status, r.read()
        assert code == 200
        waited = [
            ln for ln in body.decode().splitlines() if ln.startswith("validator_http_connections_waited")
        ]
        assert waited and float(waited[0].rsplit(" ", 1)[1]) >= 6, waited
    finally:
        for s in idle:
            s.close()
    assert get(f"http://127.0.0.1:{port}/api/status")[0] == 200


def test_prometheus_metrics(running: tuple[Path, list[devnet.DevnetValidator]]) -> None:
    _, vals = running
    code, body = get(f"http://127.0.0.1:{vals[1].api_port}/metrics")
    text = body.decode()
    assert code == 200
    for name in (
        "validator_heights_decided_total",
        "validator_votes_persisted_total",
        "validator_p2p_sent_total",
        "validator_evaluations_total",
        "validator_chain_set_weights_total",
    ):
        assert f"# TYPE {name}" in text, name
    assert 'validator_chain_set_weights_total{result="ok"}' in text
    # histograms: decision latency, and evaluation time and fuel per challenge
    assert "# TYPE validator_decision_latency_seconds histogram" in text
    assert 'validator_evaluation_fuel_bucket{challenge="maxsat",le="1e+10"}' in text
    assert 'validator_evaluation_duration_seconds_count{challenge="maxsat"}' in text


def test_dashboard_renders_in_headless_chromium(
    running: tuple[Path, list[devnet.DevnetValidator]], tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed (scripts/ensure-system-deps.sh installs Debian's package)"
    _, vals = running
    url = f"http://127.0.0.1:{vals[2].api_port}/"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-loaded="yes"' in dom, dom[-2000:]
    assert "maxsat" in dom and "tsp-tour" in dom and "(closed)" in dom
    assert dom.count("data-uid=") >= 2  # the weight chart drew the owner's and the miners' bars
    assert "burn (owner, uid 0)" in dom  # the owner's bar is the burn, labelled as such
    assert "last set_weights" in dom and "at block" in dom  # the chain panel saw a set_weights land
    assert f" of {EPOCH_BLOCKS}</span>" in dom  # epoch progress
    assert "fuel / eval" in dom and "maxsat" in dom
    shot = tmp_path / "dashboard.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1400,1000", url],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 20_000
    keep = os.environ.get("DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_owner_publishes_a_lifecycle_command_from_the_cli(
    running: tuple[Path, list[devnet.DevnetValidator]], tmp_path: Path
) -> None:
    """`registry command` + `registry publish`: the change shows only once a block decided it."""
    root, vals = running
    signed = tmp_path / "deactivate.signed"

    def registry(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "validator_node.cli", "registry", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=60)

    def status() -> dict[str, str]:
        url = f"http://127.0.0.1:{vals[2].api_port}/api/challenges"
        return {c["id"]: c["status"] for c in json.loads(get(url)[1])}

    wallet = ("--wallet.name", "owner", "--wallet.path", str(root / "wallets"))
    # an activate of an active challenge is pooled, and the owner is told it would be dropped
    futile = tmp_path / "activate.signed"
    out = registry(
        "command", "activate", "lz-compress", "--nonce", "19", "--netuid", "7", "--out", str(futile), *wallet
    )
    assert out.returncode == 0, out.stderr
    out = registry("publish", str(futile), "--validator", vals[1].multiaddr())
    assert out.returncode == 0 and "would be dropped: already_active" in out.stdout, out.stdout + out.stderr
    out = registry(
        "command",
        "deactivate",
        "lz-compress",
        "--nonce",
        "20",  # the devnet used 1..10; a validator pools only the next 16 (NONCE_WINDOW)
        "--netuid",
        "7",
        "--out",
        str(signed),
        *wallet,
    )
    assert out.returncode == 0, out.stderr
    out = registry("publish", str(signed), "--validator", vals[1].multiaddr())
    assert out.returncode == 0 and out.stdout.startswith(
        "ok: deactivate handed to the validator: pooled; it applies"
    )
    wait(lambda: status()["lz-compress"] == "inactive", 30)
    # a replay of the same signed command is refused with its reason
    out = registry("publish", str(signed), "--validator", vals[0].multiaddr())
    assert out.returncode == 1 and "stale nonce" in out.stdout, out.stdout + out.stderr
    time.sleep(1)
    assert status()["lz-compress"] == "inactive" and status()["maxsat"] == "active"


def test_decided_blocks_are_served_by_the_dht(running: tuple[Path, list[devnet.DevnetValidator]]) -> None:
    """A client that trusts only the validator set fetches a decided block, and a registered
    challenge module by its hash, from the validators' DHT."""
    import hashlib

    import trio

    from dht import records
    from validator_node.chain.local import LocalChain
    from validator_node.node import validator_set_from

    root, vals = running
    chain = LocalChain(root / "chain.sqlite")
    try:
        vset = validator_set_from(chain)
    finally:
        chain.close()

    async def fetch() -> tuple[object, bytes]:
        import multiaddr
        from libp2p import new_host
        from libp2p.crypto.ed25519 import create_new_key_pair
        from libp2p.peer.peerinfo import info_from_p2p_addr

        from dht.kad import DhtNode
        from dht.localnet import close_connections

        host = new_host(key_pair=create_new_key_pair(os.urandom(32)), muxer_preference="YAMUX")
        info = info_from_p2p_addr(multiaddr.Multiaddr(vals[1].multiaddr()))
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            await host.connect(info)
            dht = DhtNode(host, devnet.NETUID, lambda h: vset)
            async with dht.running():
                with trio.fail_after(20):
                    while not await dht.add_peer(info.peer_id):
                        await trio.sleep(0.2)
                    packet = None
                    while packet is None:
                        packet = await dht.get_decision(devnet.NETUID, 2)
                        await trio.sleep(0.2)
                    module = await dht.get_blob(records.blob_key(wasm))  # checked against its hash
            await close_connections(host)  # the DHT dialled other validators too
        return packet, module

    wasm = devnet.example_challenges()[0].wasm
    packet, module = trio.run(fetch)
    assert hashlib.sha256(module).digest() == hashlib.sha256(wasm).digest()
    body = json.loads(get(f"http://127.0.0.1:{vals[0].api_port}/api/blocks/2")[1])
    assert packet.certificate.block_hash.hex() == body["hash"]  # type: ignore[attr-defined]
