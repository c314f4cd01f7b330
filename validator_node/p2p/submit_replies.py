"""The submit protocol's replies, shared by the server, the CLI clients and the devnet.

One reply frame per item: `ok` (taken), `ok: <note>` (taken, with something the sender should
know, e.g. that a registry action would be dropped on the registry as decided now), or
`refused: <reason>`. Kept free of libp2p imports so clients that only read replies stay light.
"""

from __future__ import annotations


class Accepted(str):
    """`on_submit`'s answer for an item it took, with a note for the sender (replied `ok: <note>`);
    any other string is a refusal and None a plain `ok`."""


def accepted(reply: str) -> bool:
    """Whether a submit reply means the item was taken (`ok`, or `ok: <note>`)."""
    return reply == "ok" or reply.startswith("ok: ")


def reply_for(reason: str | None) -> bytes:
    """The reply frame for `on_submit`'s answer."""
    if reason is None:
        return b"ok"
    if isinstance(reason, Accepted):
        return f"ok: {reason}".encode()
    return f"refused: {reason}".encode()
