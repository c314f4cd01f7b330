"""docs/protocol.md stays in step with the code.

The document is what a stranger writes a second verifier from, so every wire message, signing
domain, domain-separation prefix, documented constant and test vector in it is checked here
against the code: adding a message, bumping a version, changing a cap or a field, or renaming a
domain without updating the document fails this test.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from wire.codec import registered_tags, spec_of

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
# where the protocol's code lives (tests and challenges define messages of their own)
SOURCE_DIRS = ("consensus", "dht", "registry", "runtime", "validator_node", "wire")
# signed with the default domain (the tag): not discoverable from the declaration alone
SIGNED_WITH_TAG_DOMAIN = ("registry.manifest", "registry.command")
PREFIX_LITERAL = re.compile(r'b?"((?:bt-platform/|local-chain/|platform-dev-key)[^"{}]*)"')


def _source_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _message_modules() -> list[str]:
    """Every module that declares a wire message (found by scanning, so a new one is included)."""
    return [_module_name(p) for p in _source_files() if "@wire_message(" in p.read_text(encoding="utf-8")]


def _messages() -> dict[str, type]:
    modules = _message_modules()
    for name in modules:
        importlib.import_module(name)
    return {tag: cls for tag, cls in registered_tags().items() if cls.__module__ in modules}


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _rows(text: str) -> list[list[str]]:
    """Every markdown table row, as stripped cells (escaped pipes kept inside their cell)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and not re.fullmatch(r"[|\-\s:]+", line):
            cells = re.split(r"(?<!\\)\|", line[1:-1])
            rows.append([c.strip() for c in cells])
    return rows


def _message_rows(text: str) -> dict[str, list[str]]:
    """Rows of the message table: `tag` | version | max size | fields | `module path`."""
    out: dict[str, list[str]] = {}
    for cells in _rows(text):
        if len(cells) == 5 and cells[1].isdigit() and re.fullmatch(r"`[\w/]+\.py`", cells[4]):
            tag = cells[0].strip("`")
            assert tag not in out, f"{tag} has two rows in the message table"
            out[tag] = cells
    return out


def test_every_message_has_a_row_with_its_version_cap_fields_and_module() -> None:
    messages = _messages()
    assert len(messages) >= 40  # the scan found the protocol's modules
    rows = _message_rows(_doc())
    problems = []
    for tag, cls in sorted(messages.items()):
        spec = spec_of(cls)
        cells = rows.get(tag)
        if cells is None:
            problems.append(f"{tag} v{spec.version}: no row in the message table")
            continue
        if cells[1] != str(spec.version):
            problems.append(f"{tag}: the doc says version {cells[1]}, the code {spec.version}")
        if cells[2] != str(spec.max_size):
            problems.append(f"{tag}: the doc says max size {cells[2]}, the code {spec.max_size}")
        names = tuple(re.findall(r"(?:^|, )(\w+): ", cells[3]))
        if names != spec.field_names:
            problems.append(f"{tag}: the doc's fields {names}, the code's {spec.field_names}")
        module = cls.__module__.replace(".", "/") + ".py"
        if cells[4] != f"`{module}`":
            problems.append(f"{tag}: the doc says it is defined in {cells[4]}, the code in {module}")
    stale = sorted(set(rows) - set(messages))
    if stale:
        problems.append(f"rows for messages the code does not declare: {stale}")
    assert not problems, "\n".join(problems)


def test_the_message_count_is_stated() -> None:
    assert f"{len(_messages())} message types are declared" in _doc()


def test_every_signing_domain_is_documented_with_its_messages() -> None:
    messages = _messages()
    rows = [cells for cells in _rows(_doc()) if len(cells) == 4 and re.fullmatch(r"`[\w.-]+`", cells[0])]
    documented: dict[str, tuple[str, str]] = {}  # tag -> (domain, version) as the doc says
    for cells in rows:
        for tag, version in re.findall(r"`([a-z0-9_.]+)` (\d+)", cells[1]):
            documented[tag] = (cells[0].strip("`"), version)
    signed = {t for t, c in messages.items() if spec_of(c).domain != t} | set(SIGNED_WITH_TAG_DOMAIN)
    problems = []
    for tag in sorted(signed):
        spec = spec_of(messages[tag])
        if documented.get(tag) != (spec.domain, str(spec.version)):
            problems.append(
                f"{tag} v{spec.version}: domain `{spec.domain}`;"
                f" the doc's domain table says {documented.get(tag)}"
            )
    for tag, (domain, version) in documented.items():
        cls = messages.get(tag)
        if cls is None or (spec_of(cls).domain, str(spec_of(cls).version)) != (domain, version):
            problems.append(f"the domain table's row for {tag} ({domain}, v{version}) is not the code's")
    assert not problems, "\n".join(problems)


def test_every_domain_separation_literal_in_the_code_is_documented() -> None:
    doc = _doc()
    found = {m for p in _source_files() for m in PREFIX_LITERAL.findall(p.read_text(encoding="utf-8"))}
    assert {"bt-platform/sig/1", "bt-platform/seed/1", "local-chain/set_weights/1"} <= found
    missing = sorted(s for s in found if s not in doc)
    assert not missing, f"domain strings in the code but not in docs/protocol.md: {missing}"


def _constant_rows(text: str) -> list[tuple[str, str, str]]:
    """Rows of the constants table: `NAME` | `python literal` | `module path` | meaning."""
    out = []
    for cells in _rows(text):
        if (
            len(cells) == 4
            and re.fullmatch(r"`_?[A-Z][A-Z0-9_]*`", cells[0])
            and re.fullmatch(r"`[^`]+`", cells[1])
            and re.fullmatch(r"`[\w/]+\.py`", cells[2])
        ):
            out.append((cells[0].strip("`"), cells[1].strip("`"), cells[2].strip("`")))
    return out


def test_documented_constants_are_the_codes() -> None:
    rows = _constant_rows(_doc())
    assert len(rows) >= 40
    problems = []
    for name, literal, path in rows:
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        if not hasattr(module, name):
            problems.append(f"{path} has no {name}")
            continue
        actual = getattr(module, name)
        documented = ast.literal_eval(literal)
        if actual != documented or type(actual) is not type(documented):
            problems.append(f"{path} {name} = {actual!r}, the doc says {literal}")
    assert not problems, "\n".join(problems)


def test_signing_domain_constants_are_documented() -> None:
    from validator_node.p2p.gossip import topic_for
    from validator_node.pipeline.evidence import EPOCH_SEED_DOMAIN
    from wire.envelope import SIGNATURE_CONTEXT

    doc = _doc()
    assert f'`"{SIGNATURE_CONTEXT}"`' in doc
    assert f'`b"{EPOCH_SEED_DOMAIN.decode()}"`' in doc
    assert topic_for(123) == "/bt-platform/123/items/1"
    assert "`/bt-platform/<netuid>/items/1`" in doc


def test_vectors() -> None:
    from consensus.certificates import vote_signing_bytes
    from consensus.messages import Vote
    from consensus.validators import ValidatorSet
    from registry.state import genesis
    from validator_node.chain.rules import max_upscale_u16
    from validator_node.pipeline.app_state import AppState
    from validator_node.pipeline.messages import Submission
    from validator_node.pipeline.snapshot import snapshot, state_root
    from validator_node.weights import PPB, ChallengeScores, WeightLimits, quantize, weight_rows
    from wire.codec import encode
    from wire.envelope import signing_bytes
    from wire.keys import Hotkey

    doc = _doc()
    zero = bytes(32)
    sub = encode(Submission("echo", 3, 1, b"hi"))
    owner, v0 = Hotkey.from_name("owner").public_key, Hotkey.from_name("validator-0").public_key
    state = AppState(7, 20, genesis(7, owner, 1), validators=ValidatorSet.of([(v0, 1000)]))
    hexes = [
        encode(Vote(phase=2, height=1, view=0, block_hash=zero)),
        vote_signing_bytes(7, 2, 1, 0, zero),
        sub,
        signing_bytes(7, Submission, sub),
        owner,
        v0,
        encode(snapshot(state)),
        state_root(state),
    ]
    for value in hexes:
        assert value.hex() in doc, f"test vector {value.hex()[:32]}... is not in docs/protocol.md"

    design = [
        ChallengeScores("a", 600_000_000, 0, {1: PPB // 2, 2: PPB, 3: 0}),
        ChallengeScores("b", 300_000_000, 0, {2: 1, 4: 3}),
    ]
    (row,) = weight_rows(design, 0, WeightLimits(8))
    assert f"uids `{list(row.uids)}`, weights `{list(row.weights)}`" in doc
    clipped = [ChallengeScores("a", PPB, 0, {1: 10, 2: 1})]
    (row,) = weight_rows(clipped, 0, WeightLimits(8, 3, 32767))
    assert f"uids `{list(row.uids)}`, weights `{list(row.weights)}`" in doc
    assert f"`quantize({{0: 1, 1: 2}})` = `{list(quantize({0: 1, 1: 2})[1])}`" in doc
    assert f"`max_upscale_u16([40000, 20000])` = `{max_upscale_u16([40000, 20000])}`" in doc
