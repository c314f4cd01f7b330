"""sr25519 hotkeys: Bittensor's own key type, through bittensor-core (the Rust extension).

Only `bittensor_core` is imported here (not the `bittensor` SDK), so the wire layer stays light.
Verification keys are cached per public key: building one costs about as much as a verification.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from bittensor_core import Keypair

from wire.errors import WireError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


class Hotkey:
    """A signing sr25519 hotkey. Never serialised by this project; wallets hold the secret."""

    __slots__ = ("_kp", "public_key", "ss58")

    def __init__(self, keypair: Keypair) -> None:
        self._kp = keypair
        self.public_key: bytes = bytes(keypair.public_key)
        self.ss58: str = keypair.ss58_address

    @classmethod
    def from_seed(cls, seed: bytes) -> Hotkey:
        if len(seed) != 32:
            raise ValueError("an sr25519 seed is 32 bytes")
        return cls(Keypair.create_from_seed(seed))

    @classmethod
    def from_name(cls, name: str) -> Hotkey:
        """A deterministic key for tests, simulations and devnets (never for real stake)."""
        return cls.from_seed(hashlib.sha256(b"platform-dev-key:" + name.encode()).digest())

    @classmethod
    def from_uri(cls, uri: str) -> Hotkey:
        return cls(Keypair.create_from_uri(uri))

    @classmethod
    def from_wallet(cls, name: str, hotkey: str, path: str | Path = "~/.bittensor/wallets") -> Hotkey:
        """Load the hotkey of a standard bittensor wallet (unencrypted hotkey file)."""
        from bittensor import Wallet  # the SDK only where a wallet is actually opened

        wallet = Wallet(name=name, hotkey=hotkey, path=str(Path(path).expanduser()))
        return cls(wallet.hotkey)

    def sign(self, data: bytes) -> bytes:
        return bytes(self._kp.sign(data))

    def __repr__(self) -> str:
        return f"Hotkey({self.ss58})"


@functools.lru_cache(maxsize=8192)
def _verifier(public_key: bytes) -> Keypair:
    return Keypair(public_key=public_key)


def verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    """True iff `signature` is a valid sr25519 signature of `data` by `public_key`."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        return bool(_verifier(bytes(public_key)).verify(data, signature))
    except Exception:  # malformed point encodings raise inside the extension
        return False


def ss58_of(public_key: bytes) -> str:
    try:
        return _verifier(bytes(public_key)).ss58_address
    except Exception as exc:
        raise WireError(f"not an sr25519 public key: {exc}") from None


def public_key_of(ss58: str) -> bytes:
    try:
        return bytes(Keypair(ss58_address=ss58).public_key)
    except Exception as exc:
        raise WireError(f"not an ss58 address: {ss58!r}") from exc
