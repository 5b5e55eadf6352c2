"""Provenance in the Slurm comment: any key, any template comment, decodes to its own job."""
from __future__ import annotations

import ast
import json
import random
import sys
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import pytest

from slurm_trigger import provenance
from slurm_trigger.provenance import MARKER, Source

FAKE = 'slurm-trigger:{"bucket":"evil","key":"stolen","pipeline":"p"}'
HOSTILE_KEYS = [
    "runs/slurm-trigger:a.csv",
    "slurm-trigger:",
    "a slurm-trigger:{}",
    FAKE,
    'x","pipeline":"evil"}',
    "{}{}}}{{",
    'q"uo"te\'s',
    "back\\slash\\",
    "slurm-trigger\\u003a{}",
    "slurm-trigger\\:",
    "new\nline\ttab\x00nul",
    "ünï/cødé/🙂 slurm-trigger:",
    "slurm-trigger:slurm-trigger:slurm-trigger:",
    "slurm-trigger:[1,",
    '$(touch /tmp/x)`id`${HOME}"',
]
TEMPLATE_COMMENTS = [None, "", "align ${basename}", "align slurm-trigger:", FAKE, "slurm-trigger:{", "a } b { c"]


def old_encode(source: Source, comment: str | None = None) -> str:
    """The encoding before the marker was escaped in the JSON (jobs in flight during an upgrade)."""
    payload = json.dumps({k: v for k, v in asdict(source).items() if v is not None}, separators=(",", ":"), ensure_ascii=True)
    prefix = f"{comment.strip()} " if comment and comment.strip() else ""
    return f"{prefix}{MARKER}{payload}"


def basename(key: str) -> str:
    return key.rsplit("/", 1)[-1]


@pytest.mark.parametrize("encode", [provenance.encode, old_encode], ids=["current", "before-escaping"])
@pytest.mark.parametrize("key", HOSTILE_KEYS)
@pytest.mark.parametrize("template", TEMPLATE_COMMENTS)
def test_any_key_under_any_template_comment_decodes_to_itself(encode, key: str, template: str | None) -> None:
    source = Source("in-bucket", key, "align", "v1", '"etag"', "st-0123")
    comment = template.replace("${basename}", basename(key)) if template else template
    assert provenance.decode(encode(source, comment)) == source
    # the shipped templates put the key itself in the comment, before the marker
    assert provenance.decode(encode(source, f"align {key}")) == source


def test_the_real_marker_is_the_last_one_in_a_new_comment() -> None:
    source = Source("b", FAKE, "p")
    text = provenance.encode(source, f"align {FAKE}")
    payload = text[text.rindex(MARKER) + len(MARKER) :]
    assert json.loads(payload)["key"] == FAKE
    assert text.count(MARKER) == 2  # the template's and ours: none inside the JSON


def test_random_keys_built_from_hostile_pieces() -> None:
    pieces = [MARKER, "{", "}", '"', "\\", ":", ",", "[", "]", "pipeline", "key", " ", "a", "/", "\\u003a", "null", "1"]
    rng = random.Random(8)
    for _ in range(2000):
        key = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        source = Source("b", key, rng.choice(["p", "p" + MARKER]), rng.choice([None, "v1"]))
        template = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        for encode in (provenance.encode, old_encode):
            assert provenance.decode(encode(source, template)) == source, (key, template)


@pytest.mark.parametrize(
    "comment",
    [None, "", "someone else's job", MARKER, f"{MARKER}not json", f"{MARKER}[1,2]", f'{MARKER}{{"bucket":"b"}}',
     f'{MARKER}{{"bucket":"b","key":1,"pipeline":"p"}}', f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p","extra":"x"}}',
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p"}} trailing',
     # what msgspec would take from a dataclass but the payload never holds: nulls,
     # numbers of another kind, nested values, a field of another name
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p","version_id":null}}',
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":null}}',
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p","attempt":true}}',
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p","attempt":1.0}}',
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p","attempt":"1"}}',
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p","step":{{"x":1}}}}',
     f'{MARKER}{{"bucket":["b"],"key":"k","pipeline":"p"}}',
     f'{MARKER}{{"Bucket":"b","key":"k","pipeline":"p"}}',
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p"}}{{"bucket":"b","key":"k","pipeline":"p"}}',
     f'{MARKER}{{"bucket":"b","key":"k","pipeline":"p\\ud800"}}',
     f'{MARKER}"{{}}"'],
)
def test_comments_without_a_whole_payload_are_not_ours(comment: str | None) -> None:
    assert provenance.decode(comment) is None


def test_keys_without_the_marker_encode_as_before() -> None:
    """Trackers not yet upgraded read new comments as they read old ones."""
    source = Source("b", 'runs/a "b" {c}.csv', "align", "v1", None, "st-1")
    assert provenance.encode(source, "align x") == old_encode(source, "align x")


@pytest.mark.parametrize("link", sorted((Path(__file__).parents[2] / "headnode" / "lib").glob("slurm_trigger_*.py")))
def test_what_the_head_node_hook_imports_needs_only_the_standard_library(link: Path) -> None:
    """The hook runs on the system python3 (no msgspec): the library modules the kit links
    (provenance, jobevents) and the kit's own module import only the standard library when
    loaded (the pusher imports boto3 inside its functions, under the kit's venv)."""
    body = ast.parse(link.read_text()).body
    imported = {a.name.split(".")[0] for n in body if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in body if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__", "slurm_trigger_jobevents", "slurm_trigger_provenance"}


def test_a_payload_decodes_to_the_source_with_its_attempt() -> None:
    source = Source("b", "k", "p", "v", '"e"', "key-1", "align", 2, 3, "key-0")
    assert provenance.decode(provenance.encode(source, "x")) == source
    assert provenance.decode(f'{MARKER}{{"pipeline":"p","key":"k","bucket":"b"}}') == Source("b", "k", "p")


def test_a_decoded_source_is_what_its_constructor_makes() -> None:
    """``_source`` fills the frozen dataclass without its __init__ (100,000 a first poll):
    every optional field must default to None, and the result must equal, hash and
    print as the constructor's, in the same field order."""
    assert all(f.default is None for f in fields(Source) if f.default is not MISSING)
    made = Source(bucket="b", key="k", pipeline="p", version_id="v", attempt=2, max_attempts=3, original_key="o")
    decoded = provenance.decode(provenance.encode(made))
    assert (decoded, hash(decoded), repr(decoded), list(vars(decoded))) == (made, hash(made), repr(made), list(vars(made)))
