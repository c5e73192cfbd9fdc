"""``driftmon check -c FILE`` (docs/cli.md): exit 0 with a summary, or 1 with every error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from driftmon.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIGS = sorted((REPO / "config").glob("*.yaml"))

# Every kind of mistake at once. Line numbers matter for the duplicate key (lines 55, 57).
BROKEN = """\
server:
  listne: 127.0.0.1:9108
  max_body_bytes: 16 megs
ingest:
  workers: 0
engine:
  evaluate_every: [1, 2]
  log_base: 10
state:
  checkpoint_every: 0s
defaults:
  window: {length: 15m, panes: 0}
  smoothing: -1
streams:
  - name: credit
    reference: {file: data/missing.csv}
    features:
      - {name: income, type: numeric, bins: {kind: quantile, count: 20}}
      - {name: age, type: numeric, bins: {kind: uniform, lo: 98, hi: 18, count: 16}}
      - {name: utilisation, type: numeric, bins: {kind: quantile, count: 0}}
      - {name: utilisation, type: numeric, bins: {kind: edges, edges: [0, 0.5, 0.5, 1]}}
      - {name: region, type: categorical, categories: [north, south, north, no]}
      - {name: plan, type: categorical}
      - {name: device, type: categoricl, top_k: 3}
  - name: credit
    reference: {warmup: 100, snapshot: x.snap}
    window: {samples: 0}
    features: []
  - name: churn
    reference: {warmup: 100}
    window: {samples: 50}
    features:
      - {name: plan, type: categorical, categories: [free, pro]}
    cloudevents: {service: churn-model, inputs: [plna]}
alerts:
  - name: js-high
    match: {stream: credti}
    metric: js
    threshold: 0.1
    clear_below: 0.2
  - name: js-high
    metric: jss
    threshold: 0.1
    max_p_value: 0
  - name: plan-shift
    match: {stream: churn}
    metric: wasserstein
    threshold: 0.5
    for: 5 minutes
  - name: never
    match: {stream: churn, feature: plan}
    metric: hellinger
    threshold: 1
    min_samples: 100
    severity: page
    labels: {team: risk}
    severity: ticket
"""

BROKEN_ERRORS = [
    "alerts[3].severity: duplicate key (first at line 55, again at line 57)",
    'server.listne: unknown key (did you mean "listen"?)',
    'server.max_body_bytes: unknown size unit "megs" (expected one of: B, KiB, MiB, GiB, TiB, '
    "kB, KB, MB, GB, TB)",
    "ingest.workers: must be > 0, got 0",
    'engine.evaluate_every: expected a duration like "15s", got [1, 2]',
    'engine.log_base: must be "e" or 2, got 10',
    'state.checkpoint_every: must be > 0, got "0s"',
    "defaults.window.panes: must be > 0, got 0",
    "defaults.smoothing: must be >= 0, got -1",
    "streams[0].reference.file: no such file: {dir}/data/missing.csv",
    "streams[0].features[1].bins.hi: must be > lo (98), got 18",
    "streams[0].features[2].bins.count: must be > 0, got 0",
    "streams[0].features[3].bins.edges[2]: edges must increase: must be > the previous edge "
    "(0.5), got 0.5",
    'streams[0].features[3].name: duplicate feature name "utilisation" (first at '
    "streams[0].features[2])",
    'streams[0].features[4].categories[2]: duplicate category "north" (first at '
    "streams[0].features[4].categories[0])",
    "streams[0].features[4].categories[3]: YAML reads an unquoted no, off and false as the "
    "boolean false: quote the category",
    "streams[0].features[5]: a categorical feature needs categories: [...] or top_k: N",
    'streams[0].features[6].type: unknown type "categoricl" (did you mean "categorical"?)',
    "streams[1].reference: expected exactly one of file, warmup, snapshot, got warmup and snapshot",
    "streams[1].window.samples: must be > 0, got 0",
    "streams[1].features: must list at least one feature",
    'streams[1].name: duplicate stream name "credit" (first at streams[0])',
    'streams[2].cloudevents.inputs[0]: no feature "plna" in stream "churn" (did you mean "plan"?)',
    "alerts[0].clear_below: must be <= threshold (0.1), got 0.2",
    'alerts[0].match: selects no monitor (stream "credti", feature "*")',
    'alerts[1].metric: unknown metric "jss" (did you mean "js"?)',
    "alerts[1].max_p_value: must be in (0, 1], got 0",
    'alerts[1].name: duplicate alert name "js-high" (first at alerts[0])',
    'alerts[2].for: expected a duration like "15s", got "5 minutes"',
    "alerts[2].match: wasserstein is defined for numeric features only, and this match "
    "selects only categorical ones (churn/plan)",
    "alerts[3].labels: unknown key (expected one of: name, match, metric, threshold, for, "
    "clear_below, min_samples, max_p_value, p_value_correction, keep_firing_for, severity)",
    "alerts[3].threshold: hellinger never exceeds 1, so a rule on hellinger > 1 can never fire",
    "alerts[3].min_samples: every window this rule selects holds at most 50 rows, so it "
    "could never reach 100",
]


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=[p.name for p in EXAMPLE_CONFIGS])
def test_check_passes_on_every_bundled_config(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{path}: ok (") and out.endswith(")\n")


def test_bundled_configs_include_the_example_and_the_demo() -> None:
    assert {p.name for p in EXAMPLE_CONFIGS} >= {"example.yaml", "demo.yaml"}


def test_check_prints_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "config" / "example.yaml"
    assert main(["check", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok (2 streams, 6 monitors, 2 alert rules)\n"


def test_check_lists_every_error_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    expected = [line.replace("{dir}", str(tmp_path.resolve())) for line in BROKEN_ERRORS]
    assert err.splitlines() == [f"{path}: {line}" for line in expected]


def test_check_fails_on_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.yaml"
    assert main(["check", "-c", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{path}: <file>: cannot read {path}: No such file or directory\n"


def test_check_fails_on_a_yaml_syntax_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text("streams:\n  - name: a\n   bad: indent\n", encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"{path}: <file>: line 3, column 4: expected <block end>, but found '<block mapping "
        "start>' (while parsing a block collection)\n"
    )


def test_check_requires_a_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check"])
    assert exited.value.code == 2
    assert "-c/--config" in capsys.readouterr().err


def test_check_as_a_subprocess(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "driftmon", "check", "-c", "config/example.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ok.returncode, ok.stdout, ok.stderr) == (
        0,
        "config/example.yaml: ok (2 streams, 6 monitors, 2 alert rules)\n",
        "",
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    failed = subprocess.run(
        [sys.executable, "-m", "driftmon", "check", "-c", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert len(failed.stderr.splitlines()) == len(BROKEN_ERRORS)
    assert "Traceback" not in failed.stderr


def test_check_opens_reference_snapshots_and_the_token_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``snapshot:`` naming a CSV (a mix-up with ``file:``) and an empty token file are
    errors in ``check`` as they are in ``run``; a good snapshot passes."""
    from driftmon.config import load_config
    from driftmon.reference import build_reference, save_snapshot

    (tmp_path / "mydata.csv").write_text("x\n1\n2\n", encoding="utf-8")
    (tmp_path / "token").write_text("  \n", encoding="utf-8")
    features = (
        "    features: [{name: x, type: numeric, bins: {kind: uniform, lo: 0, hi: 4, count: 4}}]\n"
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        "server: {auth_token_file: token}\n"
        "streams:\n"
        "  - name: good\n    reference: {snapshot: good.npz}\n"
        + features
        + "  - name: mixed\n    reference: {snapshot: mydata.csv}\n"
        + features,
        encoding="utf-8",
    )
    (tmp_path / "good.npz").write_bytes(b"")  # placeholder so the config loads
    stream = load_config(path).streams[0]
    save_snapshot(tmp_path / "good.npz", stream, build_reference(stream, 2, {"x": [1.0, 2.0]}))
    before = (tmp_path / "mydata.csv").read_bytes()

    assert main(["check", "-c", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"{path}: server.auth_token_file: ") and "empty" in lines[0]
    assert lines[1].startswith(f"{path}: streams[1].reference.snapshot: ")
    assert "mydata.csv" in lines[1] and "not a driftmon reference snapshot" in lines[1], err
    assert (tmp_path / "mydata.csv").read_bytes() == before  # only read

    (tmp_path / "token").write_text("secret\n", encoding="utf-8")
    path.write_text(path.read_text().replace("mydata.csv", "good.npz"), encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr().err
