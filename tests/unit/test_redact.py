"""The masking path (orchestrator/redact.py): linear time on hostile input, every secret form found."""

from __future__ import annotations

import time
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, SecretBytes, SecretStr

from orchestrator.redact import MASK, Masker, mask_url_credentials, redact, scrub, secret_paths
from workers.logs import mask_secrets

N = 10_000_000
ADVERSARIAL = {
    "letters": "a" * N,
    "scheme then letters": "a://" + "b" * N,
    "colons": "x:" * (N // 2),
    "ats": "@" * N,
    "schemes and ats": "a://@" * (N // 5),
    "credentials": "a://b:c@" * (N // 8),
    "schemes": "a://" * (N // 4) + "@",
    "letters digits": "a1" * (N // 2),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_10mb_adversarial_text_is_masked_in_well_under_a_second(name: str) -> None:
    text = ADVERSARIAL[name]
    started = time.perf_counter()
    bounded = scrub(text, ["secretvalue"], 2000)
    sample = redact({"params": {"blob": text, "many": [text] * 30}})
    masker = Masker.for_model(None).with_params({"blob": text})
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{name}: {elapsed:.3f}s"
    assert len(bounded) <= 2003 and len(sample["params"]["blob"]) <= 503
    assert masker.values == frozenset() or all(MASK not in v for v in masker.values)
    started = time.perf_counter()
    whole = scrub(text, ["secretvalue"])  # unbounded is linear too (nothing calls it with 10 MB)
    assert time.perf_counter() - started < 5.0  # the old regex took 12 s on 80 kB; 10 MB here is ~1 s
    assert len(whole) <= len(text) + len(text) // 2


@pytest.mark.parametrize(
    ("text", "masked", "secret"),
    [
        ("redis://:pw-one-1@h:6379/0", "redis://:***@h:6379/0", "pw-one-1"),
        ("redis://pw-two-2@h:6379/0", "redis://***@h:6379/0", "pw-two-2"),
        ("redis://u:p w 3x@h:6379/0", "redis://u:***@h:6379/0", "p w 3x"),
        ("redis://u:a/b/4x@h:6379/0", "redis://u:***@h:6379/0", "a/b/4x"),
        ("x postgres://app:p@ss5@db/x y", "x postgres://app:***@db/x y", "p@ss5"),
        ("two a://u:s3cr@h and b://v:t4cr@k", "two a://u:***@h and b://v:***@k", "t4cr"),
        ("no creds redis://host:6379/0\nmail me@x.org", "no creds redis://host:6379/0\nmail me@x.org", None),
    ],
)
def test_url_credentials_in_every_form(text: str, masked: str, secret: str | None) -> None:
    assert mask_url_credentials(text) == masked
    assert redact({"k": text})["k"] == masked
    if secret:
        assert secret in Masker().with_params({"dsn": text}).values
        assert secret in Masker(names=frozenset({"dsn"})).with_params({"dsn": text}).values  # marked secret too


class Leaf(BaseModel):
    value: SecretStr


class Tree(BaseModel):
    leaf: Leaf
    leaves: list[Leaf] = []
    by_name: dict[str, SecretBytes] = {}
    maybe: Leaf | None = None
    aliased: Annotated[SecretStr, Field(alias="alias")] = SecretStr("zzzz")


class Config(BaseModel):
    tree: Tree
    raw: SecretBytes
    plain: str = ""


PARAMS = {
    "tree": {
        "leaf": {"value": "nested-neutral-1"},
        "leaves": [{"value": "in-a-list-2"}],
        "by_name": {"x": "bytes-in-dict-3"},
        "maybe": {"value": "optional-4"},
        "alias": "aliased-5",
    },
    "raw": "secret-bytes-6",
    "plain": "nothing to hide",
}
SECRETS = ["nested-neutral-1", "in-a-list-2", "bytes-in-dict-3", "optional-4", "aliased-5", "secret-bytes-6"]


def test_secret_paths_at_any_depth() -> None:
    assert secret_paths(Config) == {
        ("tree", "leaf", "value"), ("tree", "leaves", "*", "value"), ("tree", "by_name", "*"),
        ("tree", "maybe", "value"), ("tree", "aliased"), ("tree", "alias"), ("raw",),
    }  # fmt: skip


def test_secret_values_and_masked_params_at_any_depth() -> None:
    masker = Masker.for_model(Config).with_params(PARAMS, Config)
    assert set(SECRETS) <= masker.values
    data = masker.data(PARAMS)
    text = repr(data)
    assert not any(s in text for s in SECRETS), text
    assert data["plain"] == "nothing to hide"
    assert data["tree"]["leaf"]["value"] == MASK
    message = masker.text(f"failed with {SECRETS} and b'secret-bytes-6'", 2000)
    assert not any(s in message for s in SECRETS), message
    validated = Config.model_validate(PARAMS)  # the model itself, as task code holds it
    assert not any(s in repr(masker.data(validated)) for s in SECRETS)


def test_text_is_cut_before_scanning_but_a_secret_across_the_cut_is_masked() -> None:
    text = "x" * 1990 + "the-secret-value" + "y" * 1_000_000
    out = scrub(text, ["the-secret-value"], 2000)
    assert "the-secr" not in out and out.startswith("x" * 1990 + MASK)
    url = "x" * 1995 + "redis://u:a-long-password@h" + "y" * 1_000_000
    assert "a-lo" not in scrub(url, (), 2000)


def test_log_processor_masks_fields_values_and_tracebacks() -> None:
    masker = Masker.for_model(Config).with_params(PARAMS, Config)
    event = {
        "event": "using nested-neutral-1",
        "value": "secret-bytes-6",
        "key": SecretStr("typed-secret-7"),
        "api_key": "by-name-8",
        "url": "redis://:pw-in-url-9@h",
        "exception": "Traceback...\nKeyError('in-a-list-2')",
        "_chordflow_masker": masker,
        "count": 3,
    }
    out = mask_secrets(None, "info", event)
    text = repr(out)
    for s in [*SECRETS, "typed-secret-7", "by-name-8", "pw-in-url-9"]:
        assert s not in text, (s, text)
    assert "_chordflow_masker" not in out and out["count"] == 3
