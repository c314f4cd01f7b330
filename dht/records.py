"""DHT record namespaces, keys, validators and chunking (sans-I/O: no sockets, no files, no clock).

Every record that enters or leaves a node's DHT passes one of the validators below, so a peer can
never make us store or serve a value we could not have produced ourselves:

  /bt-content/<sha256 hex>          a blob (payload, WASM module, checkpoint, block bytes, chunk);
                                    valid iff sha256(value) is the hex in the key
  /bt-manifest/<sha256 hex>         a `ChunkManifest` (canonical CBOR); valid iff sha256(value) is the
                                    key and the manifest is internally consistent
  /bt-block/<netuid>/<height>       a decided block: `DecisionPacket` (or `DecisionRef` when the block
                                    does not fit in one record); valid iff its commit certificate
                                    is a quorum of the validator set the caller supplies for `height`
  /bt-checkpoint/<netuid>           the newest checkpoint's index (`CheckpointIndex`): the decided
                                    block h+1 with its certificate, whose header commits to the
                                    state root = sha256 of the snapshot after h, and the snapshot's
                                    chunk manifest; valid iff the certificate verifies and the
                                    manifest is for exactly that root. Several valid values: the
                                    highest height wins (`select`), so the key converges on the
                                    newest checkpoint

Keys are ASCII; hex is lowercase; netuid and height are decimal without leading zeros, so each
record has exactly one key (two spellings of one key would let a peer bypass deduplication).

Records are capped at `RECORD_VALUE_CAP` bytes: py-libp2p refuses a PUT whose serialized record
(value + key + signature + author key + timestamp) exceeds 1 MiB, and it does so *silently* from
the putter's point of view, so a value over the cap would be stored only locally. Values above the
cap are split into chunks (each a /bt-content record) listed by a manifest.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Annotated

from libp2p.records.validator import NamespacedValidator, Validator

from consensus.certificates import CertificateError, verify_certificate, verify_vouched
from consensus.crypto import Scheme
from consensus.messages import MAX_BLOCK_SIZE, Certificate, DecisionPacket
from consensus.validators import ValidatorSet
from wire.codec import U32, U64, Bytes32, Len, decode, decode_any, encode, wire_message
from wire.errors import WireError

NS_CONTENT = "bt-content"
NS_MANIFEST = "bt-manifest"
NS_BLOCK = "bt-block"
NS_CHECKPOINT = "bt-checkpoint"

MIB = 1024 * 1024
#: py-libp2p's MAX_RECORD_SIZE is 1 MiB for the whole serialized Record protobuf; 4 KiB covers the
#: key (< 128 B), the Ed25519 signature and author key, the timestamp and protobuf framing.
RECORD_MARGIN = 4 * 1024
RECORD_VALUE_CAP = MIB - RECORD_MARGIN
CHUNK_SIZE = RECORD_VALUE_CAP
#: Largest blob we agree to reassemble; bounds what a manifest can make a node fetch.
MAX_BLOB_SIZE = 256 * MIB
MAX_CHUNKS = 4096
MANIFEST_CAP = 64 + 34 * MAX_CHUNKS

_HEX64 = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


class RecordRefused(ValueError):
    """A record failed validation. `reason` is a short stable slug, usable as a metrics label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


# --- wire messages -------------------------------------------------------------------------------


@wire_message("dht.manifest", version=1, max_size=MANIFEST_CAP)
class ChunkManifest:
    """How a value over one record's cap is cut: every chunk but the last holds exactly
    `chunk_size` bytes, the last holds 1..chunk_size; `value_hash` covers the joined value, so the
    reader checks the whole as well as each part."""

    total_size: U64
    value_hash: Bytes32
    chunk_size: U32
    chunks: Annotated[tuple[Bytes32, ...], Len(1, MAX_CHUNKS)]


@wire_message("dht.decisionref", version=1, max_size=MANIFEST_CAP + 64 * 1024)
class DecisionRef:
    """A decided block too large for one record: the certificate plus the manifest of the block
    bytes (whose chunks live under /bt-content). The manifest's `value_hash` must equal the
    certified block hash, so the block a reader reassembles is exactly the certified one."""

    certificate: Certificate
    block: ChunkManifest


@wire_message("dht.checkpointindex", version=1, max_size=RECORD_VALUE_CAP)
class CheckpointIndex:
    """Where the newest checkpoint of a subnet is, in a form anyone can check without trusting
    whoever stored it: the state after block `height` is the snapshot whose sha256 is the
    `state_root` in the header of block `height + 1`, which `next_block`'s commit certificate
    proves decided. The snapshot itself is a blob: `/bt-content/<state root hex>` when it fits in
    one record (`snapshot` is then null), else `/bt-manifest/<sha256 of snapshot>` whose manifest
    is given here (its `value_hash` must be the state root)."""

    height: U64
    next_block: DecisionPacket
    snapshot: ChunkManifest | None


# --- keys ----------------------------------------------------------------------------------------


def content_key(digest: bytes) -> str:
    """Key of a content-addressed blob, from its 32-byte sha256."""
    if len(digest) != 32:
        raise ValueError("a sha256 digest is 32 bytes")
    return f"/{NS_CONTENT}/{digest.hex()}"


def manifest_key(manifest: ChunkManifest) -> str:
    """Key of a manifest: the hash of its canonical encoding (not of the value it describes), so
    nobody can publish a different manifest under the key a writer handed out."""
    return f"/{NS_MANIFEST}/{hashlib.sha256(encode(manifest)).hexdigest()}"


def block_key(netuid: int, height: int) -> str:
    if netuid < 0 or height < 0:
        raise ValueError("netuid and height are non-negative")
    return f"/{NS_BLOCK}/{netuid}/{height}"


def checkpoint_key(netuid: int) -> str:
    if netuid < 0:
        raise ValueError("netuid is non-negative")
    return f"/{NS_CHECKPOINT}/{netuid}"


def parse_key(key: str) -> tuple[str, tuple[str, ...]]:
    """Split a key into (namespace, parts), refusing every non-canonical spelling."""
    if not isinstance(key, str) or not key.startswith("/") or len(key) > 128:
        raise RecordRefused("bad_key", f"malformed key {key!r:.80}")
    ns, *parts = key[1:].split("/")
    if ns in (NS_CONTENT, NS_MANIFEST):
        if len(parts) != 1 or not _HEX64.fullmatch(parts[0]):
            raise RecordRefused("bad_key", f"{ns} key needs one lowercase sha256 hex: {key!r:.80}")
    elif ns == NS_BLOCK:
        if len(parts) != 2 or not all(_DECIMAL.fullmatch(p) for p in parts):
            raise RecordRefused("bad_key", f"block key is /{NS_BLOCK}/<netuid>/<height>: {key!r:.80}")
    elif ns == NS_CHECKPOINT:
        if len(parts) != 1 or not _DECIMAL.fullmatch(parts[0]):
            raise RecordRefused("bad_key", f"checkpoint key is /{NS_CHECKPOINT}/<netuid>: {key!r:.80}")
    else:
        raise RecordRefused("unknown_namespace", f"no validator for {key!r:.80}")
    return ns, tuple(parts)


# --- chunking ------------------------------------------------------------------------------------


def split(value: bytes, chunk_size: int = CHUNK_SIZE) -> tuple[ChunkManifest, list[bytes]]:
    """Cut `value` into chunks of `chunk_size` and describe them in a manifest."""
    if not 1 <= chunk_size <= RECORD_VALUE_CAP:
        raise ValueError(f"chunk_size must be in [1, {RECORD_VALUE_CAP}]")
    if not value:
        raise ValueError("cannot split an empty value (the DHT refuses empty records)")
    if len(value) > MAX_BLOB_SIZE:
        raise ValueError(f"value of {len(value)} bytes is over MAX_BLOB_SIZE ({MAX_BLOB_SIZE})")
    chunks = [bytes(value[i : i + chunk_size]) for i in range(0, len(value), chunk_size)]
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"{len(chunks)} chunks is over MAX_CHUNKS ({MAX_CHUNKS}); use larger chunks")
    manifest = ChunkManifest(
        total_size=len(value),
        value_hash=hashlib.sha256(value).digest(),
        chunk_size=chunk_size,
        chunks=tuple(hashlib.sha256(c).digest() for c in chunks),
    )
    return manifest, chunks


def check_manifest(manifest: ChunkManifest) -> None:
    """Refuse a manifest whose numbers cannot describe any value (checked before fetching chunks)."""
    if not 1 <= manifest.chunk_size <= RECORD_VALUE_CAP:
        raise RecordRefused("bad_manifest", f"chunk_size {manifest.chunk_size} out of range")
    if not 1 <= manifest.total_size <= MAX_BLOB_SIZE:
        raise RecordRefused("oversize", f"total_size {manifest.total_size} out of range")
    expected = -(-manifest.total_size // manifest.chunk_size)
    if len(manifest.chunks) != expected:
        raise RecordRefused(
            "bad_manifest", f"{len(manifest.chunks)} chunks listed, {expected} needed for the size"
        )


def chunk_length(manifest: ChunkManifest, index: int) -> int:
    """The exact length chunk `index` must have (the manifest passed `check_manifest`): a chunk of
    any other length is refused on arrival, before the next one is asked for."""
    if index < len(manifest.chunks) - 1:
        return manifest.chunk_size
    return manifest.total_size - manifest.chunk_size * (len(manifest.chunks) - 1)


def check_against(manifest: ChunkManifest, size: int | None, sha256: bytes | None) -> None:
    """Refuse a manifest that does not describe the value a signed reference names (its size and
    hash), before any of its chunks is fetched: a manifest is content-addressed, but whoever made
    the reference chose it, and it may list up to MAX_BLOB_SIZE bytes of chunks."""
    check_manifest(manifest)
    if size is not None and manifest.total_size != size:
        raise RecordRefused(
            "ref_mismatch", f"manifest describes {manifest.total_size} bytes, the reference {size}"
        )
    if sha256 is not None and manifest.value_hash != sha256:
        raise RecordRefused("ref_mismatch", "manifest describes another value than the reference")


def join(manifest: ChunkManifest, chunks: Sequence[bytes]) -> bytes:
    """Reassemble a value, verifying every chunk's size and hash and the whole value's hash."""
    check_manifest(manifest)
    if len(chunks) != len(manifest.chunks):
        raise RecordRefused("bad_chunk", f"got {len(chunks)} chunks, manifest lists {len(manifest.chunks)}")
    last = len(chunks) - 1
    for i, (chunk, want) in enumerate(zip(chunks, manifest.chunks, strict=True)):
        size_ok = len(chunk) == manifest.chunk_size if i < last else 1 <= len(chunk) <= manifest.chunk_size
        if not size_ok:
            raise RecordRefused("bad_chunk", f"chunk {i} has {len(chunk)} bytes")
        if hashlib.sha256(chunk).digest() != want:
            raise RecordRefused("hash_mismatch", f"chunk {i} does not match its hash")
    value = b"".join(chunks)
    if len(value) != manifest.total_size:
        raise RecordRefused("bad_chunk", f"joined {len(value)} bytes, manifest says {manifest.total_size}")
    if hashlib.sha256(value).digest() != manifest.value_hash:
        raise RecordRefused("hash_mismatch", "joined value does not match the manifest's value hash")
    return value


# --- validators (py-libp2p's Validator interface: validate raises, select picks an index) ------


def _check_size(value: bytes) -> None:
    if not isinstance(value, bytes | bytearray):
        raise RecordRefused("malformed", f"value is {type(value).__name__}, not bytes")
    if not value:
        raise RecordRefused("malformed", "empty value")
    if len(value) > RECORD_VALUE_CAP:
        raise RecordRefused("oversize", f"{len(value)} bytes is over the record cap {RECORD_VALUE_CAP}")


class ContentValidator(Validator):
    """/bt-content/<h>: the value must hash to h. Any two valid values are equal, so select is 0."""

    def validate(self, key: str, value: bytes) -> None:
        ns, (hexdigest,) = parse_key(key)
        if ns != NS_CONTENT:
            raise RecordRefused("bad_key", f"{key!r:.80} is not a content key")
        _check_size(value)
        if hashlib.sha256(value).hexdigest() != hexdigest:
            raise RecordRefused("hash_mismatch", f"value does not hash to {hexdigest[:16]}...")

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


class ManifestValidator(Validator):
    """/bt-manifest/<h>: the value hashes to h and decodes to a consistent `ChunkManifest`."""

    def validate(self, key: str, value: bytes) -> None:
        ns, (hexdigest,) = parse_key(key)
        if ns != NS_MANIFEST:
            raise RecordRefused("bad_key", f"{key!r:.80} is not a manifest key")
        _check_size(value)
        if hashlib.sha256(value).hexdigest() != hexdigest:
            raise RecordRefused("hash_mismatch", f"manifest does not hash to {hexdigest[:16]}...")
        try:
            manifest = decode(bytes(value), ChunkManifest)
        except WireError as exc:
            raise RecordRefused("malformed", f"not a chunk manifest: {exc}") from None
        check_manifest(manifest)

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


VsetFor = Callable[[int], ValidatorSet | None]


class _CertifiedRecords(Validator):
    """What the two certified namespaces share: a commit certificate checked against
    `vset_for(height)`, remembered per (key, value digest) so that the same record, validated by
    py-libp2p on every put, get and incoming PUT, costs its sr25519 verifications once."""

    netuid: int
    vset_for: VsetFor
    scheme: Scheme | None
    # the validators of today's chain, for heights whose set `vset_for` does not know (None: refuse)
    trust_for: VsetFor | None = None
    # for such heights: is more than a third of `trust_for`'s stake enough (checkpoint indexes,
    # whose reader checks the rest), or must the signers be a quorum of it (decided blocks)?
    vouching_is_enough = False

    def _init_cache(self, size: int) -> None:
        self._cache: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._cache_size = size

    def _check_certificate(self, key: str, value: bytes, cert: Certificate, height: int) -> None:
        cache_key = (key, hashlib.sha256(value).digest())
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return
        vset = self.vset_for(height)
        trust = None if vset is not None or self.trust_for is None else self.trust_for(height)
        if vset is None and trust is None:
            raise RecordRefused("no_validator_set", f"no known validator set for height {height}")
        judge = vset if vset is not None else trust
        assert judge is not None
        vouched = vset is None and self.vouching_is_enough
        check = verify_vouched if vouched else verify_certificate
        try:
            check(cert, judge, self.netuid, self.scheme, height=height, block_hash=cert.block_hash)
        except CertificateError as exc:
            raise RecordRefused("bad_certificate", str(exc)) from None
        if vouched:
            return  # not cached: once the height's set is known, the full rule applies
        self._cache[cache_key] = None
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


class DecisionValidator(_CertifiedRecords):
    """/bt-block/<netuid>/<height>: a decided block with a commit certificate from a quorum of
    `vset_for(height)`. A height whose validator set the caller does not know (None) is refused:
    we cannot tell a real certificate from a forged one, so we neither store nor serve it.

    Certificate checks cost one sr25519 verification per signer, and py-libp2p validates the same
    record on every put, get and incoming PUT, so verified (key, value digest) pairs are cached.
    """

    def __init__(self, netuid: int, vset_for: VsetFor, scheme: Scheme | None = None, cache: int = 1024):
        self.netuid = netuid
        self.vset_for = vset_for
        self.scheme = scheme
        self._init_cache(cache)

    def validate(self, key: str, value: bytes) -> None:
        self.decode_valid(key, value)

    def decode_valid(self, key: str, value: bytes) -> DecisionPacket | DecisionRef:
        """Validate and return the decoded record (the adapter needs it; saves a second decode)."""
        ns, (netuid_s, height_s) = parse_key(key)
        if ns != NS_BLOCK:
            raise RecordRefused("bad_key", f"{key!r:.80} is not a block key")
        netuid, height = int(netuid_s), int(height_s)
        if netuid != self.netuid:
            raise RecordRefused("wrong_netuid", f"record is for netuid {netuid}, we serve {self.netuid}")
        _check_size(value)
        try:
            rec = decode_any(bytes(value), (DecisionPacket, DecisionRef), max_size=RECORD_VALUE_CAP)
        except WireError as exc:
            raise RecordRefused("malformed", f"not a decision record: {exc}") from None
        cert = rec.certificate
        if cert.height != height:
            raise RecordRefused("wrong_height", f"certificate is for height {cert.height}, key says {height}")
        if isinstance(rec, DecisionPacket):
            if hashlib.sha256(rec.block).digest() != cert.block_hash:
                raise RecordRefused("block_hash_mismatch", "block bytes do not match the certified hash")
        else:
            check_manifest(rec.block)
            if rec.block.total_size > MAX_BLOCK_SIZE:
                raise RecordRefused("oversize", f"block of {rec.block.total_size} bytes > MAX_BLOCK_SIZE")
            if rec.block.value_hash != cert.block_hash:
                raise RecordRefused("block_hash_mismatch", "block manifest is not for the certified hash")
        self._check_certificate(key, value, cert, height)
        return rec

    def select(self, key: str, values: list[bytes]) -> int:
        """Several valid records can exist for one height (same block, different signer subsets or
        views). Every node picks the smallest encoding, so replicas converge on one value."""
        return min(range(len(values)), key=lambda i: bytes(values[i]))


#: Reads a decided block's bytes as (height, state_root): the node's block format is not this
#: library's business (dht never imports validator_node), so the node passes it in.
BlockHeader = Callable[[bytes], tuple[int, bytes]]


class CheckpointIndexValidator(_CertifiedRecords):
    """/bt-checkpoint/<netuid>: a `CheckpointIndex` that proves where a real checkpoint is.

    Valid iff: the netuid is ours; `next_block` is block `height + 1` (by its certificate and by
    its own header); its commit certificate is a quorum of `vset_for(height + 1)`; and the
    snapshot reference is for exactly the state root that block commits to (a content key whose
    hash is the root, or a consistent manifest whose `value_hash` is the root). So a record that
    passes can only lead a reader to the certified state (or to nothing, if the snapshot blob is
    missing); nobody can make the index point at other bytes. Verified (key, value digest) pairs
    are cached like decided blocks.

    `select` keeps the highest height (ties: the smallest encoding), so the single key per subnet
    converges on the newest checkpoint and an older record can never replace a newer one.
    """

    def __init__(
        self,
        netuid: int,
        vset_for: VsetFor,
        block_header: BlockHeader,
        scheme: Scheme | None = None,
        cache: int = 64,
    ) -> None:
        self.netuid = netuid
        self.vset_for = vset_for
        self.block_header = block_header
        self.scheme = scheme
        self._init_cache(cache)

    def validate(self, key: str, value: bytes) -> None:
        self.decode_valid(key, value)

    def decode_valid(self, key: str, value: bytes) -> tuple[CheckpointIndex, str]:
        """The decoded index and the key of the snapshot blob it names; RecordRefused if invalid."""
        ns, (netuid_s,) = parse_key(key)
        if ns != NS_CHECKPOINT:
            raise RecordRefused("bad_key", f"{key!r:.80} is not a checkpoint key")
        if int(netuid_s) != self.netuid:
            raise RecordRefused("wrong_netuid", f"record is for netuid {netuid_s}, we serve {self.netuid}")
        _check_size(value)
        try:
            rec = decode(bytes(value), CheckpointIndex)
        except WireError as exc:
            raise RecordRefused("malformed", f"not a checkpoint index: {exc}") from None
        nb, next_height = rec.next_block, rec.height + 1
        cert = nb.certificate
        if cert.height != next_height:
            raise RecordRefused("wrong_height", f"certificate is for {cert.height}, not {next_height}")
        if hashlib.sha256(nb.block).digest() != cert.block_hash:
            raise RecordRefused("block_hash_mismatch", "block bytes do not match the certified hash")
        try:
            block_height, root = self.block_header(nb.block)
        except Exception as exc:
            raise RecordRefused("malformed", f"next block does not decode: {exc}") from None
        if block_height != next_height:
            raise RecordRefused("wrong_height", f"next block is {block_height}, not {next_height}")
        if rec.snapshot is None:
            snapshot_key = content_key(root)
        else:
            check_manifest(rec.snapshot)
            if rec.snapshot.value_hash != root:
                raise RecordRefused("root_mismatch", "snapshot manifest is not for the certified state root")
            snapshot_key = manifest_key(rec.snapshot)
        self._check_certificate(key, value, cert, next_height)
        return rec, snapshot_key

    def select(self, key: str, values: list[bytes]) -> int:
        def rank(i: int) -> tuple[int, bytes]:
            try:
                rec = decode(bytes(values[i]), CheckpointIndex)
                height, signers = rec.height, len(rec.next_block.certificate.signatures)
            except WireError:
                height, signers = -1, 0
            # newest first; then the most signatures, so that a copy trimmed to a bare third of
            # today's stake (valid for a new node's DHT, refused by its reader) never wins
            return -height, -signers, bytes(values[i])

        return min(range(len(values)), key=rank)


def make_validator(
    netuid: int, vset_for: VsetFor, scheme: Scheme | None = None, block_header: BlockHeader | None = None
) -> NamespacedValidator:
    """The strict namespaced validator for this project's DHT: keys outside our namespaces
    (including py-libp2p's default /pk and /ipns) are refused. Checkpoint indexes need
    `block_header`; without it that namespace is refused too."""
    return NamespacedValidator(validators(netuid, vset_for, scheme, block_header), strict_validation=True)


def validators(
    netuid: int,
    vset_for: VsetFor,
    scheme: Scheme | None = None,
    block_header: BlockHeader | None = None,
    trust_for: VsetFor | None = None,
) -> dict[str, Validator]:
    """Namespace -> validator for this project's DHT. `vset_for(height)`: the set that certified
    `height`, if known; `trust_for(height)`: today's chain validators, for heights it does not
    know (decided blocks then need a quorum of them, checkpoint indexes more than a third)."""
    decisions = DecisionValidator(netuid, vset_for, scheme)
    decisions.trust_for = trust_for
    out: dict[str, Validator] = {
        NS_CONTENT: ContentValidator(),
        NS_MANIFEST: ManifestValidator(),
        NS_BLOCK: decisions,
    }
    if block_header is not None:
        checkpoints = CheckpointIndexValidator(netuid, vset_for, block_header, scheme)
        checkpoints.trust_for = trust_for
        checkpoints.vouching_is_enough = True
        out[NS_CHECKPOINT] = checkpoints
    return out


def namespace_of(key: str) -> str:
    """The namespace of a key for metrics labels; never raises."""
    if isinstance(key, str) and key.startswith("/"):
        ns = key[1:].split("/", 1)[0]
        if ns in (NS_CONTENT, NS_MANIFEST, NS_BLOCK, NS_CHECKPOINT):
            return ns
    return "other"


def blob_key(value: bytes) -> str:
    """The key `put_blob` stores `value` under, computed offline: the content key when it fits in
    one record, else the key of its canonical manifest (chunks of CHUNK_SIZE). Deterministic, so
    anyone holding the value derives the same key."""
    if len(value) <= RECORD_VALUE_CAP:
        return content_key(hashlib.sha256(value).digest())
    manifest, _ = split(value)
    return manifest_key(manifest)
