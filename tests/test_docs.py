"""docs/ stays in step with the code, and the README's and docs' Python runs.

The configuration reference must name every key the config loader reads
(found by watching the loader open its mappings, not from a list kept
here), and the metrics page every metric and label a real daemon exports.
A failure names the key or metric and the file to add it to.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from harness import DaemonProcess, wait_for

from driftmon.config import ConfigError, parse_config
from driftmon.config.readers import Section

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
CONFIGURATION = DOCS / "configuration.md"
METRICS = DOCS / "metrics.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


# --- configuration keys ----------------------------------------------------------------------


def config_documents() -> Iterator[tuple[str, object, Path]]:
    """Every config the repository holds: its own files and the reference's YAML examples."""
    for path in sorted(
        [
            *REPO.glob("config/**/*.yaml"),
            *REPO.glob("examples/**/*.yaml"),
            REPO / "driftmon/data/demo.yaml",
        ]
    ):
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and "streams" in document:
            yield str(path.relative_to(REPO)), document, path.parent
    for index, block in enumerate(code_blocks(CONFIGURATION, "yaml")):
        yield f"docs/configuration.md yaml block {index + 1}", yaml.safe_load(block), DOCS


def keys_the_loader_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[set[str], list[str]]:
    """Dotted key paths (``streams[].features[].bins.count``) of every mapping the loader opens.

    Also the "unknown key" errors met on the way (documented examples must have none).
    """
    keys: set[str] = set()
    original = Section.__init__

    def recording(self: Section, value: dict[object, object], path: str, *args: object) -> None:
        prefix = re.sub(r"\[\d+\]", "[]", path)
        keys.update(f"{prefix}.{key}" if prefix else key for key in args[1])  # type: ignore[attr-defined]
        original(self, value, path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Section, "__init__", recording)
    unknown: list[str] = []
    for name, document, base_dir in config_documents():
        try:
            parse_config(document, base_dir=base_dir, snapshots_must_exist=False)
        except ConfigError as exc:
            # Files the examples name need not exist here; keys must all be known.
            unknown += [f"{name}: {e}" for e in exc.errors if "unknown key" in e]
    return keys, unknown


def documented_keys() -> set[str]:
    """The first column of the configuration reference's key table (under "## Every key")."""
    text = CONFIGURATION.read_text()
    section = text[text.index("## Every key") :]
    section = section[: section.index("\n## ", 1)]
    return set(re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE))


def test_every_config_key_is_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    read, _ = keys_the_loader_reads(monkeypatch)
    assert len(read) > 50  # the recorder works: the loader opened its mappings
    missing = sorted(read - documented_keys())
    assert not missing, (
        "docs/configuration.md does not document these config keys, which the loader in "
        "driftmon/config/ reads: "
        + ", ".join(missing)
        + ". Add a row `| `key` | default | meaning |` to its table under '## Every key' "
        "(and the key to its '## A whole config' example)."
    )


def test_documented_config_keys_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    read, _ = keys_the_loader_reads(monkeypatch)
    stale = sorted(documented_keys() - read)
    assert not stale, (
        "docs/configuration.md documents keys the loader does not read: "
        + ", ".join(stale)
        + ". Remove their rows, or put the key in the '## A whole config' example "
        "if the loader reads it only when it is present."
    )


def test_documented_config_examples_have_no_unknown_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    _, unknown = keys_the_loader_reads(monkeypatch)
    assert unknown == []


def test_the_config_check_fails_on_an_undocumented_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sync check can fail: a key the loader starts reading is reported by name.
    import driftmon.config.sections as sections

    original = sections.open_section

    def with_extra(value: object, path: str, errs: object, keys: tuple[str, ...]) -> object:
        if path == "engine":
            keys = (*keys, "brand_new_key")
        return original(value, path, errs, keys)  # type: ignore[arg-type]

    monkeypatch.setattr(sections, "open_section", with_extra)
    read, _ = keys_the_loader_reads(monkeypatch)
    assert "engine.brand_new_key" in read - documented_keys()


# --- metrics -----------------------------------------------------------------------------------

SCRAPE_CONFIG = {
    # Every optional part on, so that every family is exported: checkpoints (state.dir),
    # parse processes, a warmup stream still collecting, CloudEvents, an alert rule.
    "state": {"dir": "state", "checkpoint_every": "1s"},
    "engine": {"evaluate_every": "100ms"},
    "ingest": {"processes": 1},
    "streams": [
        {
            "name": "s",
            "reference": {"file": "reference.ndjson"},
            "cloudevents": {"service": "model", "inputs": ["x"]},
            "features": [
                {
                    "name": "x",
                    "type": "numeric",
                    "bins": {"kind": "uniform", "lo": 0, "hi": 1, "count": 4},
                },
                {"name": "c", "type": "categorical", "categories": ["a", "b"]},
            ],
        },
        {
            "name": "w",
            "reference": {"warmup": 1000},
            "features": [
                {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 4}}
            ],
        },
    ],
    "alerts": [{"name": "js-high", "metric": "js", "threshold": 0.1}],
}


def exported_families(tmp_path: Path) -> dict[str, set[str]]:
    """``{family name: label names}`` of a real daemon's ``/metrics`` (``# TYPE`` lines)."""
    (tmp_path / "reference.ndjson").write_text(
        "".join(json.dumps({"x": k / 10, "c": "ab"[k % 2]}) + "\n" for k in range(10))
    )
    config = tmp_path / "driftmon.yaml"
    config.write_text(json.dumps(SCRAPE_CONFIG))
    with DaemonProcess(config) as daemon:
        rows = json.dumps([{"x": 0.5, "c": "a", "extra": 1}] * 5).encode()
        assert daemon.post_rows("s", rows).status == 200
        assert daemon.post_rows("w", rows).status == 200
        event = {
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-source": "t",
            "ce-type": "x.request",
            "ce-inferenceservicename": "nobody",
            "Content-Type": "application/json",
        }
        daemon.post("/v1/cloudevents", b'{"instances": [[0.5]]}', event)

        def evaluated() -> str | None:
            text = daemon.get("/metrics").body.decode()
            return text if "driftmon_js_divergence{" in text else None

        text = wait_for(evaluated, 60, "an evaluation")
    families: dict[str, set[str]] = {}
    for name in re.findall(r"^# TYPE (\S+) \S+$", text, re.MULTILINE):
        families[name] = set()
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)\{(.*)\} ", line)
        if not match:
            continue
        sample, labels = match.groups()
        family = next(
            (f for f in families if sample in (f, f + "_bucket", f + "_count", f + "_sum")), sample
        )
        families.setdefault(family, set()).update(re.findall(r'(\w+)="', labels))
    for labels in families.values():
        labels.discard("le")
    return families


def documented_metrics() -> dict[str, str]:
    """Metric name → the rest of its row in docs/metrics.md."""
    return dict(re.findall(r"^\| `(driftmon_\w+)` \|(.*)$", METRICS.read_text(), re.MULTILINE))


def test_every_metric_and_label_is_documented(tmp_path: Path) -> None:
    families = exported_families(tmp_path)
    assert "driftmon_ingest_parse_processes" in families and "driftmon_warmup_rows" in families
    documented = documented_metrics()
    missing = sorted(set(families) - set(documented))
    assert not missing, (
        "docs/metrics.md does not document these metrics, which /metrics exports: "
        + ", ".join(missing)
        + ". Add a row `| `name` | type | `label`, ... | meaning |` to its table."
    )
    unlisted = sorted(
        f"{name} label {label}"
        for name, labels in families.items()
        for label in labels
        if f"`{label}`" not in documented[name]
    )
    assert not unlisted, (
        "docs/metrics.md does not list these labels in their metric's row: " + ", ".join(unlisted)
    )


# --- the repository's own words ------------------------------------------------------------------


def test_nothing_points_at_the_design_contract() -> None:
    # Users of a clone do not have that file; docs/ says it all in the repository's words.
    name = "DESIGN" + ".md"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    offenders = [
        path
        for path in files
        if (REPO / path).is_file() and name.encode() in (REPO / path).read_bytes()
    ]
    assert offenders == [], f"these files mention {name}; point at docs/ instead: {offenders}"


def test_relative_links_in_docs_and_readme_resolve() -> None:
    broken = []
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


PYTHON_BLOCKS = [
    pytest.param(block, id=f"{page.relative_to(REPO)}-{index + 1}")
    for page in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
    for index, block in enumerate(code_blocks(page, "python"))
]


@pytest.mark.parametrize("block", PYTHON_BLOCKS)
def test_python_blocks_run(block: str, tmp_path: Path) -> None:
    # Every block marked python runs as written, in an empty folder (it may not write into
    # the repository).
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
