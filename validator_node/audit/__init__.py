"""Auditing a network from public data: `validator-node audit replay` and `audit export`.

An auditor trusts nothing a validator says about itself. From a pinned genesis hash, the decided
blocks and their commit certificates (from the DHT, any node's API, an export folder or a store),
the modules and payloads by hash, and the chain's `set_weights` records, `replay` re-derives an
epoch exactly as a validator does (the same pure rules, `validator_node.pipeline`) and reports
every check it made with its figures; `export` writes those public bytes to a folder for anyone's
own tool. docs/protocol.md is the specification an independent verifier is written from.
"""
