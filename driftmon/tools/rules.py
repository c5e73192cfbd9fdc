"""Prometheus alerting rules equivalent to a config's ``alerts:``.

``driftmon rules -c FILE`` prints one rule group with one alerting rule per
driftmon alert rule, so that Prometheus raises the same alerts from the
scraped series as the daemon's own state machine (:mod:`driftmon.alerting`).
How alerts are named, the PromQL each rule becomes and where Prometheus
cannot follow the daemon exactly: docs/divergences.md, "The same alerts in
Prometheus". Tested against the real ``promtool test rules`` in
tests/test_rules.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from driftmon import __version__
from driftmon.config import AlertRule, Config
from driftmon.config.errors import exact_number
from driftmon.names import (
    ALERT_P_VALUE_SERIES,
    ALERT_SERIES,
    DIVERGENCE_SERIES,
    MONITOR_METRIC,
    WINDOW_SAMPLES_SERIES,
)

GROUP_NAME = "driftmon"
"""The name of the one rule group ``driftmon rules`` writes."""

ALERT_PREFIX = "Driftmon"
"""What every generated alert name starts with."""

METRIC_SERIES: Mapping[str, str] = ALERT_SERIES
"""The exported series (docs/metrics.md) of each alert metric (docs/divergences.md#alert-states)."""

SAMPLES_SERIES = WINDOW_SAMPLES_SERIES
"""The series ``min_samples`` is checked against (rows in the live window)."""

P_VALUE_SERIES = DIVERGENCE_SERIES["p_value"]
"""The series ``max_p_value`` is checked against (the G-test p-value, docs/divergences.md)."""

CORRECTED_P_VALUE_SERIES = ALERT_P_VALUE_SERIES
"""What ``max_p_value`` is checked against for a rule with ``p_value_correction``: the
daemon's corrected p-value of each of the rule's monitors (label ``rule``)."""

_METRIC_TITLES: Mapping[str, str] = {name: MONITOR_METRIC[name].title for name in ALERT_SERIES}

_WORD = re.compile(r"[A-Za-z0-9]+")
# Characters that mean something in an RE2 regular expression outside a class.
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")
# Prometheus keeps durations as int64 milliseconds.
_MAX_DURATION_MS = 2**63 - 1


def alert_name(rule_name: str) -> str:
    """The Prometheus alert name of a rule called ``rule_name``, before de-duplication.

    ``Driftmon`` followed by each run of ASCII letters and digits of the name
    with its first letter upper-cased (the rest kept): ``js-high`` →
    ``DriftmonJsHigh``, ``3sigma`` → ``Driftmon3sigma``. Other characters
    only separate words, so a name without ASCII letters or digits gives
    plain ``Driftmon``. The result is always a valid Prometheus metric name.
    """
    words = _WORD.findall(rule_name)
    return ALERT_PREFIX + "".join(word[:1].upper() + word[1:] for word in words)


def alert_names(rules: Sequence[AlertRule]) -> dict[str, str]:
    """``{rule name: alert name}`` for ``rules``, every alert name distinct.

    A name :func:`alert_name` already gave to an earlier rule (in the order
    of ``rules``) gets the first free suffix ``_2``, ``_3``, …; base names
    never hold ``_``, so a suffixed name cannot collide with a base one.
    Rule names must be distinct (the config loader ensures it); a repeated
    one raises ``ValueError``.
    """
    names: dict[str, str] = {}
    taken: set[str] = set()
    for rule in rules:
        if rule.name in names:
            raise ValueError(f"rules: the rule name {rule.name!r} appears twice")
        base = alert_name(rule.name)
        candidate, suffix = base, 1
        while candidate in taken:
            suffix += 1
            candidate = f"{base}_{suffix}"
        taken.add(candidate)
        names[rule.name] = candidate
    return names


def glob_regex(pattern: str) -> str:
    """An RE2 regular expression matching exactly the names the glob ``pattern`` matches.

    The glob is read as ``fnmatch.fnmatchcase`` reads it (the config's
    ``match:`` semantics): ``*`` any run of characters, ``?`` one
    character, ``[seq]`` / ``[!seq]`` a character (not) in ``seq`` with
    ``a-z`` ranges, an unclosed ``[`` a literal, everything else literal
    (backslash included). The result is unanchored, for a PromQL ``=~``
    matcher, which anchors the regex at both ends itself. ``.`` does not
    match a newline, which no stream or feature name may hold.
    """
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            if not parts or parts[-1] != ".*":
                parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char == "[":
            end = i
            if end < n and pattern[end] == "!":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 1
            if end >= n:
                parts.append("\\[")
            else:
                parts.append(_glob_class(pattern[i:end]))
                i = end + 1
        else:
            parts.append("\\" + char if char in _REGEX_SPECIAL else char)
    return "".join(parts)


def _glob_class(body: str) -> str:
    """The regex of the glob bracket expression ``[body]`` (brackets stripped)."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    i = 0
    while i < len(body):
        # "a-z" is a range unless the "-" is the last character ("[a-]" holds "a" and "-").
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low <= high:  # fnmatch drops reversed ranges: they hold nothing
                items.append(f"{_class_char(low)}-{_class_char(high)}")
            i += 3
        else:
            items.append(_class_char(body[i]))
            i += 1
    if not items:
        # \s\S is every character, in RE2 and in Python's re alike.
        return "[\\s\\S]" if negate else "[^\\s\\S]"
    return ("[^" if negate else "[") + "".join(items) + "]"


def _class_char(char: str) -> str:
    """One literal character in a regex class; ASCII punctuation escaped (RE2 and ``re`` agree)."""
    return "\\" + char if char.isascii() and not char.isalnum() else char


def promql_string(text: str) -> str:
    """``text`` as a double-quoted PromQL string literal (Go escapes, which JSON's are)."""
    return json.dumps(text, ensure_ascii=False)


def _label_matchers(rule: AlertRule) -> list[str]:
    """The ``stream``/``feature`` matchers of ``rule``'s globs; ``*`` needs none."""
    matchers = []
    for label, pattern in (("stream", rule.stream_pattern), ("feature", rule.feature_pattern)):
        regex = glob_regex(pattern)
        if regex == ".*":
            continue
        if not any(char in pattern for char in "*?["):
            matchers.append(f"{label}={promql_string(pattern)}")
        else:
            matchers.append(f"{label}=~{promql_string(regex)}")
    return matchers


def _selector(metric: str, matchers: Sequence[str]) -> str:
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def prometheus_duration(seconds: float) -> str:
    """A Prometheus duration string for ``seconds``: ``0s``, ``500ms``, ``1m30s``, ``2d3h``.

    Rounded to the nearest millisecond (Prometheus's resolution); units
    ``d h m s ms``, largest first. Raises ``ValueError`` for a negative or
    non-finite value, or one past Prometheus's largest duration (~292 years).
    """
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"seconds: must be finite and >= 0, got {seconds!r}")
    total_ms = round(seconds * 1000)
    if total_ms > _MAX_DURATION_MS:
        raise ValueError(f"seconds: {seconds!r} is longer than Prometheus can represent")
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, unit_ms in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    if total_ms:
        parts.append(f"{total_ms}ms")
    return "".join(parts)


def rule_expression(rule: AlertRule, alert: str, *, shared: bool = False) -> str:
    """The PromQL expression of ``rule``'s alert, named ``alert`` (see the module docstring).

    Multi-line and indented for reading in a rule file; the ``alert`` name is
    needed because the hysteresis and the ``min_samples`` hold read the
    alert's own ``ALERTS`` series. With ``shared`` (``cluster.mode: shared``)
    every driftmon series is read as ``max without (instance, pod) (...)``:
    the leader that exports them can change, and the alert must keep its
    identity (and its ``for``) across that change.
    """
    matchers = _label_matchers(rule)

    def series(name: str) -> str:
        selector = _selector(name, matchers)
        return f"max without (instance, pod) ({selector})" if shared else selector

    metric = series(METRIC_SERIES[rule.metric])
    firing = _selector("ALERTS", [f"alertname={promql_string(alert)}", 'alertstate="firing"'])
    samples = series(SAMPLES_SERIES)
    on = "and on(stream, feature)"
    condition = f"({metric} > {exact_number(rule.threshold)})"
    if rule.clear_threshold < rule.threshold:
        condition = (
            "(\n"
            f"  {condition}\n"
            "  or\n"
            f"  ({metric} > {exact_number(rule.clear_threshold)} {on} {firing})\n"
            ")"
        )
    lines = [condition]
    if rule.min_samples > 0:
        lines.append(f"{on} ({samples} >= {rule.min_samples})")
    if rule.max_p_value is not None:
        p_value = _p_value_selector(rule, matchers)
        if shared:
            p_value = f"max without (instance, pod) ({p_value})"
        lines.append(f"{on} ({p_value} < {exact_number(rule.max_p_value)})")
    if rule.min_samples > 0:
        lines += [
            "or",
            "(",
            f"  {metric}",
            f"  {on} {firing}",
            f"  {on} ({samples} < {rule.min_samples})",
            ")",
        ]
    return "\n".join(lines)


def _p_value_selector(rule: AlertRule, matchers: Sequence[str]) -> str:
    """The p-value series ``rule``'s ``max_p_value`` judges: raw, or the daemon's corrected one.

    A correction spans every monitor the rule matches in a stream, which the
    daemon computes at each evaluation and exports per (stream, feature, rule).
    """
    if rule.p_value_correction == "none":
        return _selector(P_VALUE_SERIES, matchers)
    return _selector(CORRECTED_P_VALUE_SERIES, [f"rule={promql_string(rule.name)}", *matchers])


def _template_text(text: str) -> str:
    """``text`` as literal text in a Prometheus (Go) template: each ``{`` written as an action.

    Rule labels and annotations are templates, so a rule name holding
    ``{{`` would otherwise be executed rather than shown.
    """
    return text.replace("{", '{{"{"}}') if "{" in text else text


def _description(rule: AlertRule) -> str:
    series = METRIC_SERIES[rule.metric]
    threshold = exact_number(rule.threshold)
    text = f'driftmon alert rule "{rule.name}": fires when {series} > {threshold}'
    if rule.max_p_value is not None and rule.p_value_correction == "none":
        text += f" and {P_VALUE_SERIES} < {exact_number(rule.max_p_value)}"
    elif rule.max_p_value is not None:
        text += (
            f" and {CORRECTED_P_VALUE_SERIES} ({rule.p_value_correction}-corrected over the "
            f"features it checks in the stream) < {exact_number(rule.max_p_value)}"
        )
    if rule.for_s > 0:
        text += f" for {prometheus_duration(rule.for_s)}"
    if rule.min_samples > 0:
        text += f", once the live window holds at least {rule.min_samples} rows"
    text += f"; resolves at or below {exact_number(rule.clear_threshold)}"
    if rule.max_p_value is not None:
        text += " or when the drift stops being significant"
    if rule.keep_firing_for_s > 0:
        text += f", {prometheus_duration(rule.keep_firing_for_s)} after the condition clears"
    return _template_text(text + ".")


def summary_template(rule: AlertRule) -> str:
    """The ``summary`` annotation of ``rule``'s alert: the metric, the monitor and the value."""
    title = _METRIC_TITLES[rule.metric]
    series = METRIC_SERIES[rule.metric]
    return (
        f"{title} ({series}) of {{{{ $labels.stream }}}}/{{{{ $labels.feature }}}} "
        "is {{ $value }}"
    )


def alerting_rule(
    rule: AlertRule, alert: str, base_url: str | None = None, *, shared: bool = False
) -> dict[str, Any]:
    """One entry of a rule group's ``rules:`` for ``rule``, alerting as ``alert``."""
    entry: dict[str, Any] = {
        "alert": alert,
        "expr": _Block(rule_expression(rule, alert, shared=shared)),
        "for": prometheus_duration(rule.for_s),
    }
    if rule.keep_firing_for_s > 0:
        entry["keep_firing_for"] = prometheus_duration(rule.keep_firing_for_s)
    entry["labels"] = {
        "severity": _template_text(rule.severity),
        "rule": _template_text(rule.name),
    }
    entry["annotations"] = {
        "summary": summary_template(rule),
        "description": _description(rule),
    }
    if base_url is not None:
        entry["annotations"]["driftmon_url"] = driftmon_url_template(base_url)
    return entry


def driftmon_url_template(base_url: str) -> str:
    """The ``driftmon_url`` annotation: the page of the alert's monitor on the daemon.

    Prometheus templates escape only query strings (``urlquery``), so the link
    is the daemon's ``/monitors?stream=…&feature=…``, which redirects to the page.
    """
    return (
        f"{_template_text(base_url)}/monitors?stream={{{{ $labels.stream | urlquery }}}}"
        "&feature={{ $labels.feature | urlquery }}"
    )


def rules_document(config: Config, group: str = GROUP_NAME) -> dict[str, Any]:
    """The rule file of ``config``'s alerts as a mapping: ``{"groups": [one group]}``.

    The group is named ``group`` and holds one alerting rule per alert rule,
    in config order; a config without alerts gives a group with no rules.
    Raises ``ValueError`` naming the rule when a duration cannot be written
    as a Prometheus duration.
    """
    names = alert_names(config.alerts)
    rules = []
    for rule in config.alerts:
        try:
            rules.append(
                alerting_rule(
                    rule, names[rule.name], config.server.base_url(), shared=config.cluster.shared
                )
            )
        except ValueError as exc:
            raise ValueError(f"alert rule {rule.name!r}: {exc}") from exc
    return {"groups": [{"name": group, "rules": rules}]}


def render_rules(config: Config, group: str = GROUP_NAME) -> str:
    """:func:`rules_document` as the YAML text of a Prometheus rule file, with a header comment."""
    header = (
        f"# Prometheus alerting rules generated by driftmon {__version__} (`driftmon rules`)\n"
        "# from the alerts of a driftmon config: regenerate rather than edit.\n"
    )
    body = yaml.dump(
        rules_document(config, group),
        Dumper=_RuleDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=2**16,  # long lines stay whole: a folded template is harder to read
    )
    return header + body


class _Block(str):
    """A string written as a YAML literal block (``|``): expressions stay readable."""


class _RuleDumper(yaml.SafeDumper):
    """A safe dumper that writes :class:`_Block` strings as literal blocks."""


def _represent_block(dumper: yaml.SafeDumper, value: _Block) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


_RuleDumper.add_representer(_Block, _represent_block)
