"""Reason codes for "not approved" decisions and returns, loaded from data (SPEC §6).

The packaged table is ``gateway/data/case_reasons.toml`` (its header documents the layout). Loading
fails closed like the province rules: an unknown key, a missing text, an unknown action or
programme raises :class:`~gateway.errors.ConfigError` naming the key path; nothing half-checked is
returned. :meth:`ReasonTable.require` is what the lifecycle calls: a code the table lacks, or one
not allowed for that action and programme, is :class:`~gateway.errors.UnknownReasonCode`.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources

from gateway.cases.types import Programme
from gateway.errors import ConfigError, UnknownReasonCode

REASONS_FORMAT = 1
_CODE = re.compile(r"[a-z][a-z0-9_]{1,63}", re.ASCII)


class ReasonAction(StrEnum):
    REJECT = "reject"  # decided, not approved (不予批准/不予认定)
    RETURN = "return"  # returned to the accepting place (退回)


@dataclass(frozen=True)
class Reason:
    code: str
    zh: str
    en: str
    actions: frozenset[ReasonAction]
    programmes: frozenset[Programme]


@dataclass(frozen=True)
class ReasonTable:
    reasons: tuple[Reason, ...]  # in file order

    def get(self, code: str) -> Reason:
        for reason in self.reasons:
            if reason.code == code:
                return reason
        raise UnknownReasonCode("no such reason code")

    def require(self, code: str, action: ReasonAction, programme: Programme) -> Reason:
        """The reason ``code``, if it may be cited by ``action`` on a ``programme`` case; else
        :class:`~gateway.errors.UnknownReasonCode` (the code is not echoed: it came from outside)."""
        reason = self.get(code)
        if action not in reason.actions or programme not in reason.programmes:
            raise UnknownReasonCode(f"the reason code may not be cited by {action.value} on a {programme.value} case")
        return reason


def load_reasons(text: str | None = None) -> ReasonTable:
    """Parse a reason-code file; ``None`` reads the packaged ``gateway/data/case_reasons.toml``."""
    origin = "case reasons"
    if text is None:
        origin = "packaged case_reasons.toml"
        text = resources.files("gateway").joinpath("data/case_reasons.toml").read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc

    def fail(path: str, problem: str) -> ConfigError:
        return ConfigError(f"{origin}: {path}: {problem}")

    if set(document) != {"format", "reasons"}:
        raise fail("(top level)", "must hold exactly 'format' and 'reasons'")
    if document["format"] != REASONS_FORMAT or isinstance(document["format"], bool):
        raise fail("format", f"this software reads format {REASONS_FORMAT}")
    body = document["reasons"]
    if not isinstance(body, dict) or not body:
        raise fail("reasons", "must be a non-empty table")
    reasons: list[Reason] = []
    for code, entry in body.items():
        path = f"reasons.{code}"
        if not _CODE.fullmatch(code):
            raise fail(path, "a reason code is lower-case letters, digits and _")
        if not isinstance(entry, Mapping) or set(entry) != {"zh", "en", "actions", "programmes"}:
            raise fail(path, "must have exactly zh, en, actions, programmes")
        texts: dict[str, str] = {}
        for key in ("zh", "en"):
            value = entry[key]
            if not isinstance(value, str) or not value.strip():
                raise fail(f"{path}.{key}", "must be a non-empty string")
            texts[key] = value
        try:
            actions = frozenset(ReasonAction(a) for a in _strings(entry["actions"]))
            programmes = frozenset(Programme(p) for p in _strings(entry["programmes"]))
        except ValueError as exc:
            raise fail(path, f"unknown action or programme: {exc}") from None
        if not actions or not programmes:
            raise fail(path, "actions and programmes must not be empty")
        reasons.append(Reason(code, texts["zh"], texts["en"], actions, programmes))
    return ReasonTable(tuple(reasons))


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be an array of strings")
    return [str(v) for v in value]


@functools.cache
def default_reasons() -> ReasonTable:
    """The packaged table, loaded once."""
    return load_reasons()
