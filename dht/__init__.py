"""dht: validated DHT records over py-libp2p's KadDHT.

`records` (pure: keys, validators, chunking), `store` (SQLite WAL record store), `kad` (the trio
adapter `DhtNode`), `localnet` (loopback networks for tests and benches). See docs/dht.md.
"""
