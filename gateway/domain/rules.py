"""Per-province monitoring rules, loaded from data (SPEC §1: "exemptions are data, not code").

The packaged rule file is ``gateway/data/province_rules.toml``; its header comment documents the
layout. :func:`load_rules` turns it (or any text of the same layout) into a :class:`RuleBook`:

* ``[national]`` holds the national definitions — cadence (quarterly), age limit (16), minimum
  months away (6) and the parent situations that count as lacking guardianship capacity;
* ``[provinces.NN]`` holds one province: its name, any override of a national value, and its
  **exemption groups** — county codes between which a move does not make a child migrant.

Loading **fails closed**: an unknown key anywhere, a missing required key, a value of the wrong
type or out of range, a code outside its province, a county listed twice: each raises
:class:`~gateway.errors.ConfigError` naming the exact key path (``provinces.50.exemption_groups[0]
.counties[3]``), and no partial rule book is ever returned.

Exemption groups and division changes
-------------------------------------
Codes change (SPEC §1: in Nov 2025 Chongqing retired 江北区 500105 → 两江新区 500157 and 渝北区
500112 → 500157 and 北碚区 500109). Rule files keep retired codes listed, because records still
carry them. :meth:`RuleBook.exempt` therefore works on *current* codes: it resolves the two
codes it is asked about and every code a group lists through the division table's successor
links, and calls a move exempt only when **every** current code each side can stand for lies in
one group. A retired code whose successors straddle the group boundary is therefore never exempt
(the child might have moved out of the group), and a listed retired code whose successor the
group does not list is a :class:`~gateway.errors.ConfigError`, so the data has to say explicitly
whether each successor is exempt.

Areas without a code of their own
---------------------------------
Chongqing's exempt list names 高新区 (Chongqing High-tech Zone), which has no GB/T 2260 code:
its residents' records carry the code of the statutory district they live in (沙坪坝区 or 九龙坡区,
both listed). The rule file records this as a comment and lists no code for it; a code the
division table does not know is refused here like anywhere else.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Protocol

from gateway.domain.period import Cadence
from gateway.domain.records import ParentSituation
from gateway.errors import ConfigError, InputError, InvalidDivisionCode, SuccessorUnknown

RULES_FORMAT = 1

_PROVINCE_CODE = re.compile(r"[1-9][0-9]", re.ASCII)
_COUNTY_CODE = re.compile(r"[1-9][0-9]{5}", re.ASCII)

# Situations that can never mean "lacks guardianship capacity": the first three describe a parent
# who is able to care or is the working-away parent itself; "unknown" must be found out by the
# county, and counting it as incapable would make children left-behind on a guess.
_NEVER_INCAPABLE = frozenset(
    {
        ParentSituation.AT_HOME,
        ParentSituation.WITH_CHILD,
        ParentSituation.WORKING_AWAY,
        ParentSituation.UNKNOWN,
    }
)

_AGE_LIMIT_RANGE = range(1, 19)  # a child is a minor (未成年人) until 18
_MONTHS_AWAY_RANGE = range(1, 25)


class DivisionResolver(Protocol):
    """What the rules need from the division table (``gateway.domain.divisions.DivisionTable``)."""

    def resolve_all(self, code: str) -> tuple[str, ...]:
        """Current county codes ``code`` maps to: ``(code,)`` if current, ``()`` if unknown."""
        ...

    def is_current(self, code: str) -> bool: ...


@dataclass(frozen=True)
class ExemptionGroup:
    """County codes between which moving does not make a child migrant.

    ``counties`` is the list as written in the rule file, retired codes included, in file order.
    """

    name: str
    counties: tuple[str, ...]

    def current_counties(self, table: DivisionResolver, where: str) -> frozenset[str]:
        """The group as current codes: every listed code resolved through ``table``.

        Raises :class:`~gateway.errors.ConfigError` when a listed code is unknown to the table,
        its successor is unknown, or it resolves to a code the group does not list (the rule file
        must decide explicitly whether a successor is exempt). ``where`` names the group in
        messages.
        """
        listed = frozenset(self.counties)
        current: set[str] = set()
        for code in self.counties:
            try:
                successors = table.resolve_all(code)
            except InputError as exc:
                raise ConfigError(f"{where}: listed county {code} is not usable: {exc}") from exc
            if not successors:
                raise ConfigError(
                    f"{where}: listed county {code} is retired and its successor is unknown; "
                    "add the successor link to the division table or remove the code"
                )
            unlisted = sorted(set(successors) - listed)
            if unlisted:
                raise ConfigError(
                    f"{where}: listed county {code} now maps to {', '.join(unlisted)}, which the group "
                    f"does not list; list {'them' if len(unlisted) > 1 else 'it'} or remove {code}"
                )
            current.update(successors)
        return frozenset(current)


@dataclass(frozen=True)
class ProvinceRules:
    """The rules in force in one province: national values with this province's overrides applied."""

    code: str  # first two digits of the province's GB/T 2260 codes, e.g. "50"
    name: str  # e.g. "重庆市"
    cadence: Cadence
    age_limit: int  # counted while younger than this, in completed years (周岁)
    min_months_away: int  # calendar months lived in another county before a child is migrant
    lacks_guardianship_capacity: frozenset[ParentSituation]
    exemption_groups: tuple[ExemptionGroup, ...] = ()


@dataclass(frozen=True)
class NationalRules:
    """The national definitions every province inherits."""

    cadence: Cadence
    age_limit: int
    min_months_away: int
    lacks_guardianship_capacity: frozenset[ParentSituation]


@dataclass(frozen=True)
class RuleBook:
    """All provinces' rules. Build with :func:`load_rules`."""

    national: NationalRules
    provinces: tuple[ProvinceRules, ...]
    _by_code: Mapping[str, ProvinceRules] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_code = {p.code: p for p in self.provinces}
        if len(by_code) != len(self.provinces):
            raise ConfigError("a province is listed twice in the rule book")
        object.__setattr__(self, "_by_code", MappingProxyType(by_code))

    def for_province(self, code2: str) -> ProvinceRules:
        """The rules of the province whose division codes start with ``code2``.

        Raises :class:`~gateway.errors.InvalidDivisionCode` if ``code2`` is not two digits (pass
        ``county_code[:2]``), and :class:`~gateway.errors.ConfigError` if the rule book has no
        table for that province: a province without rules is a gap in the configuration, never
        silently given the national defaults.
        """
        if not _PROVINCE_CODE.fullmatch(code2):
            raise InvalidDivisionCode(f"province code {code2!r} must be two digits, e.g. '50'")
        try:
            return self._by_code[code2]
        except KeyError:
            raise ConfigError(
                f"the province rules have no table for province {code2}; add [provinces.{code2}]"
            ) from None

    def exempt(self, residence: str, registration: str, table: DivisionResolver) -> bool:
        """Whether a move between these two counties is exempt from counting as migrant.

        Steps, in order:

        1. Resolve both codes through ``table.resolve_all``; a code whose successor is unknown
           raises :class:`~gateway.errors.SuccessorUnknown` (an exemption is never guessed).
           Whatever the table raises for a code it does not know propagates.
        2. For each exemption group of the province(s) concerned, resolve the group's listed codes
           the same way (see :meth:`ExemptionGroup.current_counties`; inconsistencies in the rule
           data raise :class:`~gateway.errors.ConfigError`).
        3. Exempt only if *all* current codes of the residence and *all* current codes of the
           registration fall in one and the same group. Groups only hold codes of their own
           province, so this implies both lie in the same province.

        This answers group membership only; whether the child moved at all (the codes may resolve
        to the same county) is the caller's question.
        """
        residence_now = resolve_strict(table, residence)
        registration_now = resolve_strict(table, registration)
        provinces = {code[:2] for code in residence_now | registration_now}
        if len(provinces) != 1:
            return False
        (province,) = provinces
        rules = self._by_code.get(province)
        if rules is None:
            return False
        for index, group in enumerate(rules.exemption_groups):
            where = f"provinces.{province}.exemption_groups[{index}] ({group.name})"
            members = group.current_counties(table, where)
            if residence_now <= members and registration_now <= members:
                return True
        return False


def resolve_strict(table: DivisionResolver, code: str) -> frozenset[str]:
    """``table.resolve_all(code)`` as a set, raising :class:`~gateway.errors.SuccessorUnknown`
    instead of returning an empty set: no caller may treat "successor unknown" as "no county"."""
    resolved = frozenset(table.resolve_all(code))
    if not resolved:
        raise SuccessorUnknown(f"division {code} is retired and its successor is not recorded")
    return resolved


# --- loading ------------------------------------------------------------------------------------


def load_rules(text: str | None = None) -> RuleBook:
    """Parse a province rule file into a :class:`RuleBook`.

    ``text`` is the TOML text; ``None`` reads the packaged ``gateway/data/province_rules.toml``
    through :mod:`importlib.resources` (so it works from a wheel or zip too).

    Checked, in order: the text is TOML; the top level has exactly ``format`` (must be 1),
    ``national`` and ``provinces``; ``national`` has exactly its four keys; each province key is
    two digits and its table has ``name`` plus only known overrides; each exemption group has a
    ``name`` and at least two six-digit ``counties`` of its own province, with no county in two
    groups of a province and no group name repeated. The first problem found raises
    :class:`~gateway.errors.ConfigError` naming the key path; nothing is returned half-checked.
    Division codes are checked against the division table only when they are used
    (:meth:`RuleBook.exempt`), because the rule book is loaded without one.
    """
    origin = "province rules"
    if text is None:
        origin = "packaged province_rules.toml"
        text = resources.files("gateway").joinpath("data/province_rules.toml").read_text(encoding="utf-8")
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    return _Loader(origin).rule_book(document)


class _Loader:
    """Validating conversion from parsed TOML to rule objects; every error names its key path."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.origin}: {path}: {problem}" if path else f"{self.origin}: {problem}")

    def keys(
        self, table: Mapping[str, object], path: str, required: Iterable[str], optional: Iterable[str] = ()
    ) -> None:
        required, optional = set(required), set(optional)
        unknown = sorted(set(table) - required - optional)
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise self.fail(path, f"unknown key {unknown[0]!r} (allowed here: {allowed})")
        missing = sorted(required - set(table))
        if missing:
            raise self.fail(path, f"missing required key {missing[0]!r}")

    def table(self, value: object, path: str) -> Mapping[str, object]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a table, not {_toml_type(value)}")
        return value

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, f"must be a non-empty string, not {_toml_type(value)}")
        return value

    def integer(self, value: object, path: str, allowed: range) -> int:
        # bool is a subclass of int in Python; `age_limit = true` must not read as 1.
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(path, f"must be an integer, not {_toml_type(value)}")
        if value not in allowed:
            raise self.fail(path, f"must be between {allowed.start} and {allowed.stop - 1}, not {value}")
        return value

    def array(self, value: object, path: str) -> list[object]:
        if not isinstance(value, list):
            raise self.fail(path, f"must be an array, not {_toml_type(value)}")
        return value

    def cadence(self, value: object, path: str) -> Cadence:
        text = self.string(value, path)
        try:
            return Cadence(text)
        except ValueError:
            choices = ", ".join(repr(c.value) for c in Cadence)
            raise self.fail(path, f"{text!r} is not a cadence (one of {choices})") from None

    def incapable(self, value: object, path: str) -> frozenset[ParentSituation]:
        situations: set[ParentSituation] = set()
        for index, item in enumerate(self.array(value, path)):
            item_path = f"{path}[{index}]"
            text = self.string(item, item_path)
            try:
                situation = ParentSituation(text)
            except ValueError:
                raise self.fail(item_path, f"{text!r} is not a parent situation") from None
            if situation in _NEVER_INCAPABLE:
                raise self.fail(item_path, f"{text!r} cannot mean a parent lacks guardianship capacity")
            if situation in situations:
                raise self.fail(item_path, f"{text!r} is listed twice")
            situations.add(situation)
        if not situations:
            raise self.fail(path, "must list at least one parent situation")
        return frozenset(situations)

    def rule_book(self, document: Mapping[str, object]) -> RuleBook:
        self.keys(document, "", required=("format", "national", "provinces"))
        version = document["format"]
        if version != RULES_FORMAT or isinstance(version, bool):
            raise self.fail("format", f"this software reads format {RULES_FORMAT}, not {version!r}")
        national = self.national(self.table(document["national"], "national"))
        provinces = self.table(document["provinces"], "provinces")
        if not provinces:
            raise self.fail("provinces", "must hold at least one province")
        return RuleBook(
            national=national,
            provinces=tuple(
                self.province(code, self.table(body, f"provinces.{code}"), national)
                for code, body in sorted(provinces.items())
            ),
        )

    def national(self, table: Mapping[str, object]) -> NationalRules:
        self.keys(
            table,
            "national",
            required=("cadence", "age_limit", "min_months_away", "lacks_guardianship_capacity"),
        )
        return NationalRules(
            cadence=self.cadence(table["cadence"], "national.cadence"),
            age_limit=self.integer(table["age_limit"], "national.age_limit", _AGE_LIMIT_RANGE),
            min_months_away=self.integer(table["min_months_away"], "national.min_months_away", _MONTHS_AWAY_RANGE),
            lacks_guardianship_capacity=self.incapable(
                table["lacks_guardianship_capacity"], "national.lacks_guardianship_capacity"
            ),
        )

    def province(self, code: str, table: Mapping[str, object], national: NationalRules) -> ProvinceRules:
        path = f"provinces.{code}"
        if not _PROVINCE_CODE.fullmatch(code):
            raise self.fail(path, f"province key {code!r} must be the two-digit province code, e.g. 50")
        self.keys(
            table,
            path,
            required=("name",),
            optional=(
                "cadence",
                "age_limit",
                "min_months_away",
                "lacks_guardianship_capacity",
                "exemption_groups",
            ),
        )
        groups = self.array(table.get("exemption_groups", []), f"{path}.exemption_groups")
        return ProvinceRules(
            code=code,
            name=self.string(table["name"], f"{path}.name"),
            cadence=(self.cadence(table["cadence"], f"{path}.cadence") if "cadence" in table else national.cadence),
            age_limit=(
                self.integer(table["age_limit"], f"{path}.age_limit", _AGE_LIMIT_RANGE)
                if "age_limit" in table
                else national.age_limit
            ),
            min_months_away=(
                self.integer(table["min_months_away"], f"{path}.min_months_away", _MONTHS_AWAY_RANGE)
                if "min_months_away" in table
                else national.min_months_away
            ),
            lacks_guardianship_capacity=(
                self.incapable(table["lacks_guardianship_capacity"], f"{path}.lacks_guardianship_capacity")
                if "lacks_guardianship_capacity" in table
                else national.lacks_guardianship_capacity
            ),
            exemption_groups=self.groups(code, groups, f"{path}.exemption_groups"),
        )

    def groups(self, province: str, items: list[object], path: str) -> tuple[ExemptionGroup, ...]:
        groups: list[ExemptionGroup] = []
        seen_names: set[str] = set()
        group_of: dict[str, str] = {}  # county -> path of the group that lists it
        for index, item in enumerate(items):
            group_path = f"{path}[{index}]"
            table = self.table(item, group_path)
            self.keys(table, group_path, required=("name", "counties"))
            name = self.string(table["name"], f"{group_path}.name")
            if name in seen_names:
                raise self.fail(f"{group_path}.name", f"group name {name!r} is used twice")
            seen_names.add(name)
            counties: list[str] = []
            for county_index, value in enumerate(self.array(table["counties"], f"{group_path}.counties")):
                county_path = f"{group_path}.counties[{county_index}]"
                county = self.string(value, county_path)
                if not _COUNTY_CODE.fullmatch(county):
                    raise self.fail(county_path, f"{county!r} is not a six-digit county-level division code")
                if not county.startswith(province):
                    raise self.fail(county_path, f"{county} is not in province {province}")
                if county in group_of:
                    raise self.fail(county_path, f"{county} is already listed at {group_of[county]}")
                group_of[county] = county_path
                counties.append(county)
            if len(counties) < 2:
                raise self.fail(f"{group_path}.counties", "an exemption group needs at least two counties")
            groups.append(ExemptionGroup(name=name, counties=tuple(counties)))
        return tuple(groups)


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names.update({list: "an array", dict: "a table"})
    return names.get(type(value), type(value).__name__)
