"""The first byte of every frame on a validator link: which layer it is for.

Only consensus is left (0x01, app items, moved to GossipSub: p2p/gossip.py); a frame with any other
first byte is counted (`p2p_dropped_total{reason="unknown_channel"}`) and dropped. Its own module so
the node and state sync, which both feed the consensus inbox, share it without importing each other.
"""

from __future__ import annotations

CONSENSUS = b"\x00"
