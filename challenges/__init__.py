"""Example challenges (source, committed .wasm, Python reference, test vectors), the ABI v1 SDK
headers (`sdk/`), the scaffolding templates (`templates/`) and the author's toolkit (`toolkit.py`).
See docs/challenge-abi.md."""
