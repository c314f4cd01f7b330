"""`validator-node run`: one validator node, configured the way Bittensor validators are.

Flags follow Bittensor's conventions (`--netuid`, `--subtensor.network`,
`--subtensor.chain_endpoint`, `--wallet.name`, ...). Every flag can also come from a TOML config
file (`--config`, keys as in the flag without the leading dashes, e.g. `"wallet.name" = "val0"`,
or as TOML tables: `[wallet]` `name = "val0"`) or an environment variable
(`VALIDATOR_NODE_WALLET_NAME`); the command line wins over the environment, which wins over the
file. A key or a `VALIDATOR_NODE_*` variable that is no option is an error naming it (a typo would
otherwise silently leave the default in force).

There is no default chain: `run` refuses to start without `--subtensor.network` or
`--subtensor.chain_endpoint` (docs/operator.md, "Which chain"). The node's folder is locked for
the life of the process (validator_node/startup.py), before any store, chain or socket is opened.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sqlite3
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

# (flag, type, default, help)
OPTIONS: list[tuple[str, Any, Any, str]] = [
    ("netuid", int, None, "subnet id"),
    (
        "subtensor.network",
        str,
        None,
        "finney, test, a ws(s):// endpoint, or local (the embedded chain of a devnet); required unless"
        " --subtensor.chain_endpoint is given",
    ),
    (
        "subtensor.chain_endpoint",
        str,
        None,
        "a subtensor node's ws:// or wss:// endpoint, as in bittensor (wins over --subtensor.network)",
    ),
    ("chain.path", str, None, "local chain database (default: <data-dir>/local-chain.sqlite)"),
    ("chain.genesis", str, None, "genesis file to create the local chain from, if it does not exist"),
    ("wallet.name", str, "default", "wallet (coldkey) name"),
    ("wallet.hotkey", str, "default", "hotkey name"),
    ("wallet.path", str, "~/.bittensor/wallets", "wallets directory"),
    ("p2p.host", str, "127.0.0.1", "listen address"),
    ("p2p.port", int, 0, "listen port (0: any)"),
    (
        "p2p.bootstrap",
        str,
        "",
        "comma-separated /ip4/.../tcp/.../p2p/... addresses (optional: validators' addresses are read "
        "from the chain)",
    ),
    (
        "p2p.announce",
        str,
        None,
        "the multiaddr to publish on the chain for other validators (default: the listen address, "
        "unless it is 0.0.0.0)",
    ),
    (
        "p2p.discovery_interval",
        float,
        30.0,
        "seconds between reads of validators' addresses on the chain (0: off)",
    ),
    ("data-dir", str, "data", "state directory; the node uses <data-dir>/<netuid>/<hotkey>/"),
    ("block-interval", float, 1.0, "seconds between a decision and the next proposal"),
    ("consensus.timeout", float, 3.0, "base view timeout in seconds (doubles per view)"),
    ("stop-at-height", int, None, "exit cleanly once this height is decided (tests, devnets)"),
    (
        "epoch-blocks",
        int,
        20,
        "decided blocks per epoch, for a genesis record this node creates (a record's own value wins)",
    ),
    ("genesis", str, None, "the network's genesis record file (validator-node genesis create)"),
    (
        "genesis-hash",
        str,
        None,
        "pin the network's genesis: refuse any record whose sha256 differs (64 hex digits)",
    ),
    ("api.host", str, "127.0.0.1", "HTTP API / dashboard / metrics address"),
    ("api.port", int, None, "HTTP API port (off unless given; 0 picks a free port)"),
    ("dht", int, 1, "1: keep decided blocks and checkpoints in the Kademlia DHT; 0: off"),
    (
        "evidence",
        str,
        "",
        "CHALLENGE=SOURCE,...: where this validator observes evidence for epoch-scored challenges "
        "(sources: bitdefense-rounds, swap-market-sim)",
    ),
]


def _env_name(flag: str) -> str:
    return "VALIDATOR_NODE_" + flag.replace(".", "_").replace("-", "_").upper()


def _dest(flag: str) -> str:
    return flag.replace(".", "_").replace("-", "_")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with any of the options below")
    for flag, typ, _default, help_text in OPTIONS:
        parser.add_argument(
            f"--{flag}", dest=_dest(flag), type=typ, default=None, help=f"{help_text} (env {_env_name(flag)})"
        )
    parser.add_argument("--logging.debug", action="store_true", dest="logging_debug", help="debug logs")
    parser.add_argument("--logging.json", action="store_true", dest="logging_json", help="JSON log lines")
    parser.set_defaults(func=run_command)


#: VALIDATOR_NODE_* variables that are not `run` options: the pm2 process file's own settings
#: (deploy/ecosystem.config.js), which pm2 passes on to the node, and the allocation tracer's
#: (validator_node/memdebug.py)
OTHER_ENV = ("VALIDATOR_NODE_ENV_FILE", "VALIDATOR_NODE_BIN", "VALIDATOR_NODE_CWD", "VALIDATOR_NODE_PM2_NAME")
OTHER_ENV_PREFIX = "VALIDATOR_NODE_MEMTRACE"
COMMAND_LINE_ONLY = ("config", "logging.debug", "logging.json")


class OptionError(ValueError):
    """A bad option, config-file key or environment variable: one line naming it."""


def resolve_options(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Merge defaults < config file < environment < command line. Raises OptionError for a
    config-file key or VALIDATOR_NODE_* variable that is no option, or a value of the wrong type."""
    env = os.environ if environ is None else environ
    file_values = _read_config(Path(args.config)) if args.config else {}
    flags = {flag for flag, *_ in OPTIONS}
    unknown = sorted(set(file_values) - flags)
    if unknown:
        only = [k for k in unknown if k in COMMAND_LINE_ONLY]
        why = f" ({', '.join(only)}: command line only)" if only else ""
        raise OptionError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in the config"
            f" file {args.config}{why}; the keys are the flags of `validator-node run --help` without '--'"
        )
    known_env = {_env_name(flag) for flag in flags}
    stray = sorted(
        name
        for name in env
        if name.startswith("VALIDATOR_NODE_")
        and name not in known_env
        and name not in OTHER_ENV
        and not name.startswith(OTHER_ENV_PREFIX)
    )
    if stray:
        raise OptionError(
            f"unknown environment variable{'s' if len(stray) > 1 else ''} {', '.join(stray)}: no such"
            " option (each flag's variable is listed in `validator-node run --help`)"
        )
    values: dict[str, Any] = {}
    for flag, typ, default, _ in OPTIONS:
        v = getattr(args, _dest(flag))
        if v is None and _env_name(flag) in env:
            v = _convert(typ, env[_env_name(flag)], f"environment variable {_env_name(flag)}")
        if v is None and flag in file_values:
            v = _convert(typ, file_values[flag], f"key {flag!r} in {args.config}")
        values[flag] = default if v is None else v
    return values


def _read_config(path: Path) -> dict[str, Any]:
    """The config file's keys, TOML tables flattened: `[wallet]` `name = ...` and the unquoted
    dotted key `wallet.name = ...` (which TOML reads as a table) both give "wallet.name"."""
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as exc:
        raise OptionError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OptionError(f"the config file {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}

    def walk(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                out[prefix + key] = value

    walk(doc, "")
    return out


def _convert(typ: Any, value: Any, where: str) -> Any:
    try:
        return typ(value)
    except (TypeError, ValueError):
        raise OptionError(f"{where}: {value!r} is not {'an' if typ is int else 'a'} {typ.__name__}") from None


def setup_logging(debug: bool, as_json: bool) -> None:
    from validator_node.logs import configure

    configure(debug=debug, as_json=as_json)


class ChainOpenError(RuntimeError):
    """The chain cannot be opened: one line naming the file or endpoint and why."""


def open_chain(opts: dict[str, Any], data_dir: Path) -> Any:
    """The chain `--subtensor.chain_endpoint` or `--subtensor.network` names: a subtensor node
    through bittensor (the endpoint wins over the network, as in bittensor), or `local`, the
    embedded chain in a file. Raises ChainOpenError naming the endpoint or file and the reason."""
    network = opts.get("subtensor.network")
    endpoint = opts.get("subtensor.chain_endpoint")
    if endpoint:
        if not endpoint.startswith(("ws://", "wss://")):
            raise ChainOpenError(f"--subtensor.chain_endpoint {endpoint!r} is not a ws:// or wss:// URL")
        if network == "local":
            raise ChainOpenError(
                "--subtensor.network local is the embedded chain and --subtensor.chain_endpoint a subtensor"
                " node: give one of them"
            )
    elif network == "local":
        return _open_local_chain(opts, data_dir)
    elif not network:
        raise ChainOpenError("no chain given: --subtensor.network or --subtensor.chain_endpoint")
    from validator_node.chain.subtensor import SubtensorChain

    target = endpoint or network
    try:
        chain = SubtensorChain(opts["netuid"], target)
        chain.current_block()  # the SDK connects lazily: fail here, naming the endpoint
    except Exception as exc:
        raise ChainOpenError(f"{target}: {exc}") from exc
    return chain


def _open_local_chain(opts: dict[str, Any], data_dir: Path) -> Any:
    from validator_node.chain.local import Genesis, LocalChain

    path = Path(opts["chain.path"] or data_dir / "local-chain.sqlite").expanduser()
    problem = _unopenable(path)
    if problem:
        raise ChainOpenError(f"the local chain {path}: {problem}")
    genesis = None
    if opts["chain.genesis"]:
        try:
            genesis = Genesis.load(opts["chain.genesis"])
        except OSError as exc:
            raise ChainOpenError(
                f"the chain genesis {opts['chain.genesis']}: {exc.strerror or exc}"
            ) from None
    for attempt in range(20):  # processes sharing one chain file may briefly hold its lock
        try:
            return LocalChain(path, genesis)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 19:
                raise ChainOpenError(f"the local chain {path}: {exc}") from exc
            time.sleep(0.25)
        except sqlite3.DatabaseError as exc:  # not a database, corrupt, ...
            raise ChainOpenError(f"the local chain {path}: {exc}") from exc


def _unopenable(path: Path) -> str:
    """Why SQLite could not open or create `path` ("unable to open database file" says neither
    which nor why), or "" if it looks openable."""
    if path.is_dir():
        return "is a directory"
    if path.exists():
        return (
            ""
            if os.access(path, os.R_OK | os.W_OK)
            else "permission denied (it must be readable and writable)"
        )
    parent = path.parent
    if not parent.is_dir():
        return f"the directory {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"permission denied: cannot create a file in {parent}"
    return ""


#: Allocations this large or larger get their own mapping, returned to the kernel when freed.
MMAP_THRESHOLD = 1024 * 1024


def tune_malloc(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD) -> None:
    """Two glibc settings, made before any thread starts, that keep what a node frees from
    staying in its RSS. An operator's own MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ wins.

    * Arenas: glibc gives threads that allocate their own arena (up to 8 per core) and keeps what
      is freed in each: in the memory soak a node's worker threads (SQLite off the event loop,
      checkpoint reads, the heap tracer) held 21-26 MB of free heap, growing, against 5-7 MB with
      two arenas.
    * The mmap threshold: glibc raises it to the size of each large block freed (up to 32 MiB),
      so after one 16 MiB frame every later buffer below that size comes from the heap, where a
      small survivor pins the pages around it. Under the adversary run's junk frames validator
      0 kept ~280 MB that way. A fixed threshold keeps every buffer of 1 MiB and more (frames,
      checkpoints, yamux stream buffers) in its own mapping, unmapped when freed."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    m_arena_max, m_mmap_threshold = -8, -3  # glibc's malloc.h
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to tune
        libc = ctypes.CDLL(None)
        if not os.environ.get("MALLOC_ARENA_MAX"):
            libc.mallopt(m_arena_max, arenas)
        if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
            libc.mallopt(m_mmap_threshold, mmap_threshold)


def run_command(args: argparse.Namespace) -> int:
    tune_malloc()
    take_sigint()
    try:
        opts = resolve_options(args)
    except OptionError as exc:
        print(f"validator-node run: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.logging_debug, args.logging_json)
    log = logging.getLogger("validator_node")
    if opts["netuid"] is None:
        print("validator-node run: --netuid is required", file=sys.stderr)
        return 2
    if not opts["subtensor.network"] and not opts["subtensor.chain_endpoint"]:
        print(
            "validator-node run: say which chain: --subtensor.network finney|test|local or"
            " --subtensor.chain_endpoint ws://... (there is no default: docs/operator.md, 'Which chain')",
            file=sys.stderr,
        )
        return 2
    import trio

    from validator_node import memdebug
    from validator_node.node import NodeConfig, ValidatorNode
    from wire.keys import Hotkey

    try:
        hotkey = Hotkey.from_wallet(opts["wallet.name"], opts["wallet.hotkey"], opts["wallet.path"])
    except Exception as exc:
        print(
            f"validator-node run: cannot load hotkey {opts['wallet.name']}/{opts['wallet.hotkey']}: {exc}",
            file=sys.stderr,
        )
        return 2
    data_root = Path(opts["data-dir"]).expanduser()
    node_dir = data_root / str(opts["netuid"]) / hotkey.ss58
    from validator_node.startup import StartupError, lock_data_dir

    try:  # before anything opens a store, the chain or a socket; held until the process ends
        lock_data_dir(node_dir)
    except StartupError as exc:
        print(f"validator-node run: {exc}", file=sys.stderr)
        return 2
    try:
        chain = open_chain(opts, data_root)
    except Exception as exc:
        print(f"validator-node run: cannot open the chain: {exc}", file=sys.stderr)
        return 2
    if chain.netuid != opts["netuid"]:
        print(
            f"validator-node run: the chain is netuid {chain.netuid}, not {opts['netuid']}", file=sys.stderr
        )
        return 2
    from validator_node.genesis import GenesisError

    try:
        record, pin = obtain_genesis(opts, chain, node_dir, log)
    except GenesisError as exc:
        print(f"validator-node run: {exc}", file=sys.stderr)
        return 2
    cfg = NodeConfig(
        netuid=opts["netuid"],
        data_dir=node_dir,
        listen_host=opts["p2p.host"],
        listen_port=opts["p2p.port"],
        bootstrap=[a for a in opts["p2p.bootstrap"].split(",") if a],
        block_interval=opts["block-interval"],
        base_timeout=opts["consensus.timeout"],
        stop_at_height=opts["stop-at-height"],
        epoch_blocks=opts["epoch-blocks"],
        api_host=opts["api.host"],
        api_port=opts["api.port"],
        dht=bool(opts["dht"]),
        evidence=opts["evidence"],
        genesis_hash=pin,
        announce=opts["p2p.announce"],
        discovery_interval=opts["p2p.discovery_interval"],
    )
    try:
        node = ValidatorNode(cfg, hotkey, chain, record)
    except GenesisError as exc:
        print(f"validator-node run: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        log.error("cannot start: %s", exc)
        return 1
    log.info("validator %s on netuid %d, data in %s", hotkey.ss58, cfg.netuid, node_dir)
    if memdebug.maybe_start(node_dir):
        log.warning("%s is set: tracing allocations (slow; debug only)", memdebug.ENV)
    try:
        trio.run(node.run)
    except KeyboardInterrupt:
        log.info("interrupted; stopping")
    except BaseExceptionGroup as eg:
        startup = [e for e in _leaves(eg) if isinstance(e, StartupError)]
        if startup:  # a port in use: one line, no traceback
            print(f"validator-node run: {startup[0]}", file=sys.stderr)
            return 2
        # py-libp2p may raise "Nursery is closed to new arrivals" while tearing down under traffic
        # Ctrl-C arrives wrapped in the nursery's group
        benign = (KeyboardInterrupt,)
        if not all(
            isinstance(e, benign) or (isinstance(e, RuntimeError) and "Nursery is closed" in str(e))
            for e in _leaves(eg)
        ):
            raise
        log.info("stopped (libp2p teardown noise suppressed)")
    finally:
        node.evaluator.close()
        node.payloads.close()
        node.store.close()
    return 0


def take_sigint() -> None:
    """Stop on SIGINT even when started with it ignored. A shell starts a background job (`cmd &`
    in a script, or wherever job control is off) with SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler; a `kill -INT` or `pm2 stop` would do nothing, and the stop would
    come only as SIGKILL. The node's own handler (node.py `_stop_on_signal`) takes SIGINT and
    SIGTERM alike once it runs; this makes the time before that behave as started by hand."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def obtain_genesis(
    opts: dict[str, Any], chain: Any, node_dir: Path, log: logging.Logger
) -> tuple[Any, bytes | None]:
    """(record or None, pin or None) for the node: `--genesis FILE`; else, for a store holding no
    record yet and bootstrap peers to ask, the record those peers serve and prove (checked against
    `--genesis-hash` if pinned, else vouched for by today's chain: validator_node.genesis). None
    when the store already holds one, or when a first node creates it from the chain."""
    from validator_node.chain_duty import validator_set_from
    from validator_node.genesis import fetch_from_peers, genesis_hash, load, parse_hash
    from validator_node.store import NodeStore

    pin = parse_hash(opts["genesis-hash"]) if opts["genesis-hash"] else None
    if opts["genesis"]:
        return load(Path(opts["genesis"]).expanduser()), pin
    path = node_dir / "node.sqlite"
    if path.exists():
        store = NodeStore(path)
        try:
            if store.genesis_record() is not None:
                return None, pin
        finally:
            store.close()
    bootstrap = [a for a in opts["p2p.bootstrap"].split(",") if a]
    source = "bootstrap"
    if not bootstrap and opts["p2p.discovery_interval"] > 0:
        bootstrap, source = validators_on_chain(chain, node_dir), "chain-published"
    if not bootstrap:
        return None, pin  # nobody to ask: this node starts a network from the chain
    import trio

    log.info("asking %d %s peer(s) for the network's genesis record", len(bootstrap), source)
    got = trio.run(
        lambda: fetch_from_peers(bootstrap, netuid=opts["netuid"], pin=pin, trust=validator_set_from(chain))
    )
    log.info("genesis %s from %s", genesis_hash(got.record).hex(), got.source)
    return got.record, pin


def validators_on_chain(chain: Any, node_dir: Path) -> list[str]:
    """The addresses today's permit holders published on the chain (validator_node.discovery), but
    this node's own: whom a node with no genesis record asks for it. None published means this is
    the network's first node."""
    from validator_node.chain_duty import validator_set_from
    from validator_node.discovery import dial_targets
    from wire.keys import public_key_of

    vset = validator_set_from(chain)
    if vset is None:
        return []
    mine = public_key_of(node_dir.name)  # the node's folder is named after its hotkey (ss58)
    return dial_targets(chain.endpoints(), {v.hotkey for v in vset.validators}, mine)


def _leaves(eg: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in eg.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out
