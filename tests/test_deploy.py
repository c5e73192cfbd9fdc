"""Checks of the deployment files under deploy/ (Grafana's excepted: they have their own tests).

Every file a real tool can check here is checked by it: ``promtool`` (the
Prometheus config with the rule files next to it, and the rules), ``amtool``
(the Alertmanager config and its routing tree), the real Alertmanager (the
inhibition rule), ``systemd-analyze`` (the unit, and its sandbox rating).
Where no tool runs here (no docker engine, no Kubernetes API), the files are
parsed and cross-checked: every command line they give driftmon parses with
driftmon's own CLI, every path they mount exists, every port and label that
ties two files together agrees, the configs they embed pass ``driftmon
check``, and the generated rule files equal ``driftmon rules`` output. The
Dockerfile's kernel warm-up and health check are run for real.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pkgutil
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from harness import DaemonProcess, wait_for

from driftmon.cli import build_parser
from driftmon.cli import main as driftmon_main

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
WEBHOOK_LOGGER = DEPLOY / "alertmanager" / "webhook_logger.py"
RULES_DIR = DEPLOY / "rules"
DEMO_RULES = RULES_DIR / "driftmon-demo.yml"
UNIT = DEPLOY / "systemd" / "driftmon.service"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"
GENERATE = DEPLOY / "generate.py"
README = DEPLOY / "README.md"

DEMO_CONFIG = REPO / "config" / "demo.yaml"
PACKAGED_DEMO_CONFIG = REPO / "driftmon" / "data" / "demo.yaml"
DAEMON_PORT = 9108  # the default port (docs/http-api.md), the one every deployment file publishes


# --- helpers -----------------------------------------------------------------


def require_tool(name: str, package: str) -> str:
    """The path of the executable ``name``; skip when absent, except in CI (which installs it)."""
    path = shutil.which(name)
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is missing in CI: .ci/run must install Debian's {package}")
    pytest.skip(f"{name} is not installed (Debian package {package}; CI installs it)")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_documents(path: Path) -> list[Any]:
    """Every document of a multi-document YAML file, empty ones left out."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def driftmon_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` (without the program name) parsed by driftmon's own CLI, or a test failure."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of rejecting a command line
        raise AssertionError(f"driftmon rejects the command line {argv}") from exc


def run_driftmon_rules(config_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "driftmon", "rules", "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def load_module(path: Path, name: str) -> ModuleType:
    """Import a script of deploy/ (not a package) by its path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def host_port(address: str) -> tuple[str, int]:
    """``("driftmon", 9108)`` from ``driftmon:9108`` or ``http://driftmon:9108/path``."""
    found = re.fullmatch(r"(?:https?://)?\[?([^\]/]+?)\]?:(\d+)(?:/.*)?", address)
    assert found, f"no host:port in {address!r}"
    return found.group(1), int(found.group(2))


# --- Prometheus --------------------------------------------------------------


def test_prometheus_config_scrapes_driftmon_and_alerts() -> None:
    config = load_yaml(PROMETHEUS_YML)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    driftmon = jobs["driftmon"]  # the job name is the job label of every series
    assert driftmon.get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    assert driftmon.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for static in driftmon["static_configs"] for t in static["targets"]]
    assert targets and all(host_port(t)[1] == DAEMON_PORT for t in targets)
    assert config["rule_files"] == ["rules/*.yml"]
    alertmanagers = [
        target
        for manager in config["alerting"]["alertmanagers"]
        for static in manager["static_configs"]
        for target in static["targets"]
    ]
    assert alertmanagers


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
    rule_files = sorted(RULES_DIR.glob("*.yml"))
    assert rule_files, "deploy/rules/ holds no rule file: run python deploy/generate.py"
    # The layout docker-compose mounts: prometheus.yml with rules/ beside it.
    shutil.copy(PROMETHEUS_YML, tmp_path / "prometheus.yml")
    (tmp_path / "rules").mkdir()
    for path in rule_files:
        shutil.copy(path, tmp_path / "rules" / path.name)
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # promtool also checked each rule file the glob found: all of them, none empty.
    assert f"SUCCESS: {len(rule_files)} rule files found" in done.stdout, done.stdout
    counts = [int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", done.stdout)]
    assert len(counts) == len(rule_files) and min(counts) > 0, done.stdout


def test_prometheusrule_spec_passes_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
    (rule,) = [doc for doc in kubernetes_documents() if doc["kind"] == "PrometheusRule"]
    spec_file = tmp_path / "spec.yml"
    spec_file.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run(
        [promtool, "check", "rules", str(spec_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- generated rules ---------------------------------------------------------


def test_demo_rules_file_is_driftmon_rules_output() -> None:
    expected = run_driftmon_rules(DEMO_CONFIG)
    assert DEMO_RULES.exists(), "run python deploy/generate.py"
    assert DEMO_RULES.read_text() == expected, "stale: run python deploy/generate.py"
    # docker-compose runs `driftmon demo`, i.e. the packaged copy of the demo
    # config: Prometheus there must load that daemon's rules.
    assert run_driftmon_rules(PACKAGED_DEMO_CONFIG) == expected


def test_prometheusrule_has_the_configmap_configs_rules(tmp_path: Path) -> None:
    config_file = tmp_path / "driftmon.yaml"
    config_file.write_text(configmap_config())
    generated = yaml.safe_load(run_driftmon_rules(config_file))
    (rule,) = [doc for doc in kubernetes_documents() if doc["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"] == generated
    # The Kubernetes config has the demo's alerts, so the same rules as deploy/rules,
    # but for the pages they link to (its server.external_url).
    def without_links(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for group in groups:
            for entry in group["rules"]:
                url = entry["annotations"].pop("driftmon_url")
                assert url.startswith(("http://localhost:9108/monitors?", "http://127.0.0.1:9108/"))
        return groups

    assert without_links(rule["spec"]["groups"]) == without_links(
        load_yaml(DEMO_RULES)["groups"]
    )


def test_generate_script_finds_nothing_stale() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATE), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_generate_script_embeds_rules_verbatim() -> None:
    generate = load_module(GENERATE, "driftmon_deploy_generate")
    # A comment, a nested list and a block scalar with an empty line in it.
    rules_text = (
        "# a comment\n"
        "groups:\n"
        "- name: g\n"
        "  rules:\n"
        "  - alert: A\n"
        "    expr: |-\n"
        "      up\n"
        "\n"
        "      == 0\n"
    )
    manifest = yaml.safe_load(generate.prometheus_rule(rules_text))
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"] == yaml.safe_load(rules_text)
    assert manifest["spec"]["groups"][0]["rules"][0]["expr"] == "up\n\n== 0"


# --- Alertmanager ------------------------------------------------------------


def amtool_routes_test(amtool: str, *labels: str) -> str:
    done = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def test_alertmanager_config_passes_amtool() -> None:
    amtool = require_tool("amtool", "prometheus-alertmanager")
    done = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_YML)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alertmanager_routes_by_severity() -> None:
    amtool = require_tool("amtool", "prometheus-alertmanager")
    monitor = ("stream=shop", "feature=basket_value", "rule=psi-significant")
    assert amtool_routes_test(amtool, "severity=critical", *monitor) == "drift-critical"
    assert amtool_routes_test(amtool, "severity=warning", *monitor) == "drift-warning"
    # An alert without a severity still reaches someone.
    assert amtool_routes_test(amtool, "alertname=Other") == "drift-warning"
    config = load_yaml(ALERTMANAGER_YML)
    assert config["route"]["group_by"] == ["alertname", "stream", "feature"]
    receivers = {r["name"]: r for r in config["receivers"]}
    for name in ("drift-critical", "drift-warning"):
        assert receivers[name]["webhook_configs"], name


@dataclass
class Alertmanager:
    """A real Alertmanager on a free port, clustering off."""

    process: subprocess.Popen[str]
    url: str
    log: list[str] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        call = urllib.request.Request(self.url + path, data, headers, method=method)
        with urllib.request.urlopen(call, timeout=10) as answer:
            text = answer.read()
        return json.loads(text) if text else None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    binary = require_tool("prometheus-alertmanager", "prometheus-alertmanager")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={ALERTMANAGER_YML}",
            f"--storage.path={tmp_path}",
            "--web.listen-address=127.0.0.1:0",
            "--cluster.listen-address=",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    log: list[str] = []
    listening = threading.Event()
    address: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            found = re.search(r'msg="Listening on" address=(\S+)', line)
            if found and not address:
                address.append(found.group(1))
                listening.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: listening.is_set() or process.poll() is not None, 30, "Alertmanager to listen"
        )
        assert listening.is_set(), "Alertmanager exited:\n" + "".join(log)
        manager = Alertmanager(process, f"http://{address[0]}", log)
        yield manager
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
        reader.join(30)
        process.stderr.close()


def test_alertmanager_inhibits_warning_while_critical_fires(alertmanager: Alertmanager) -> None:
    def alert(name: str, severity: str, feature: str) -> dict[str, Any]:
        return {
            "labels": {
                "alertname": name,
                "severity": severity,
                "rule": name.lower(),
                "stream": "shop",
                "feature": feature,
                "job": "driftmon",
            }
        }

    alertmanager.request(
        "POST",
        "/api/v2/alerts",
        [
            alert("DriftmonPsiSignificant", "critical", "device"),
            alert("DriftmonJsHigh", "warning", "device"),  # same monitor: muted
            alert("DriftmonJsHigh", "warning", "items"),  # another monitor: not muted
        ],
    )

    def states() -> dict[tuple[str, str], str] | None:
        alerts = alertmanager.request("GET", "/api/v2/alerts")
        found = {
            (a["labels"]["severity"], a["labels"]["feature"]): a["status"]["state"] for a in alerts
        }
        # The inhibitor learns of the critical alert asynchronously: poll.
        return found if found.get(("warning", "device")) == "suppressed" else None

    found = wait_for(states, 20, "the warning on shop/device to be inhibited")
    assert found == {
        ("critical", "device"): "active",
        ("warning", "device"): "suppressed",
        ("warning", "items"): "active",
    }


def test_webhook_logger_formats_notifications() -> None:
    logger = load_module(WEBHOOK_LOGGER, "driftmon_deploy_webhook_logger")
    payload = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "DriftmonJsHigh",
                    "severity": "warning",
                    "stream": "shop",
                    "feature": "device",
                },
                "annotations": {"summary": "JS divergence of shop/device is 0.3"},
            },
            {"status": "resolved", "labels": {"alertname": "DriftmonBasketShift"}},
        ],
    }
    assert logger.format_notification("/warning", payload) == [
        "NOTIFY /warning firing DriftmonJsHigh severity=warning stream=shop feature=device"
        " :: JS divergence of shop/device is 0.3",
        "NOTIFY /warning resolved DriftmonBasketShift severity=- stream=- feature=-",
    ]
    assert logger.format_notification("/x", {"no": "alerts"}) == ["NOTIFY /x unreadable payload"]


def test_webhook_logger_serves_alertmanager_posts() -> None:
    process = subprocess.Popen(
        [sys.executable, str(WEBHOOK_LOGGER), "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        found = re.fullmatch(r"listening on (http://\S+)\n", first)
        assert found, first
        body = {"alerts": [{"status": "firing", "labels": {"alertname": "A", "stream": "s"}}]}
        call = urllib.request.Request(
            found.group(1) + "/critical",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(call, timeout=10) as answer:
            assert answer.status == 200
        line = process.stdout.readline()
        assert line == "NOTIFY /critical firing A severity=- stream=s feature=-\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        stdout, stderr = process.communicate(timeout=10)
    assert stderr == ""


# --- systemd -----------------------------------------------------------------


def unit_directives(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}`` of a unit file (comments dropped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} before any section"
        assert not line.endswith("\\"), "no continuation lines: keep this parser honest"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_unit_is_hardened_as_promised() -> None:
    service = unit_directives(UNIT)["Service"]
    expected = {
        "DynamicUser": "yes",
        "StateDirectory": "driftmon",
        "CacheDirectory": "driftmon",
        "ConfigurationDirectory": "driftmon",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillSignal": "SIGTERM",
        "Restart": "on-failure",
    }
    for key, value in expected.items():
        assert service.get(key) == [value], key
    assert "@system-service" in service["SystemCallFilter"]
    assert "TimeoutStopSec" in service
    # numba writes machine code to memory and then executes it.
    assert "MemoryDenyWriteExecute" not in service
    comments = [line for line in UNIT.read_text().splitlines() if line.startswith("#")]
    assert any("MemoryDenyWriteExecute" in line for line in comments), "explain why it is unset"
    environment = dict(value.split("=", 1) for value in service["Environment"])
    assert environment["NUMBA_CACHE_DIR"].startswith("/var/cache/driftmon/")


def test_unit_command_lines_are_driftmon_commands() -> None:
    service = unit_directives(UNIT)["Service"]
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "driftmon"
    args = driftmon_args(argv[1:])
    assert args.command == "run"
    # The config lives in ConfigurationDirectory=driftmon, i.e. /etc/driftmon.
    assert Path(args.config).parent == Path("/etc/driftmon")


@pytest.fixture(scope="module")
def systemd_analyze(tmp_path_factory: pytest.TempPathFactory) -> str:
    """systemd-analyze, once it has verified a trivial unit here; else skip with why not."""
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    probe = tmp_path_factory.mktemp("probe") / "probe.service"
    probe.write_text("[Service]\nExecStart=/bin/true\n")
    done = subprocess.run(
        [binary, "verify", "--man=no", str(probe)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=probe.parent,
    )
    if done.returncode != 0 or done.stderr.strip():
        pytest.skip(f"systemd-analyze cannot verify units in this container: {done.stderr.strip()}")
    return binary


def installed_unit(folder: Path) -> Path:
    """A copy of the unit whose ExecStart names this test run's real driftmon executable.

    The unit names /opt/driftmon/bin/driftmon (the venv its comment installs);
    verify checks that the binary exists, so point it at one that does.
    """
    executable = Path(sys.executable).parent / "driftmon"
    assert executable.exists(), f"no driftmon console script next to {sys.executable}"
    text = UNIT.read_text()
    assert "ExecStart=/opt/driftmon/bin/driftmon " in text
    copy = folder / "driftmon.service"
    copy.write_text(text.replace("/opt/driftmon/bin/driftmon", str(executable)))
    return copy


def test_unit_passes_systemd_analyze_verify(systemd_analyze: str, tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    done = subprocess.run(
        [systemd_analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    # verify exits 0 on unknown keys and bad values too, and says so on stderr.
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_unit_verify_catches_a_bad_unit(systemd_analyze: str, tmp_path: Path) -> None:
    # The check above must be able to fail: a typo in a key is reported.
    unit = installed_unit(tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    done = subprocess.run(
        [systemd_analyze, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert "ProtectHomes" in done.stderr


def test_unit_sandbox_rating(systemd_analyze: str, tmp_path: Path) -> None:
    unit = installed_unit(tmp_path)
    done = subprocess.run(
        # The threshold is the exposure level times ten: 20 means "2.0, OK" or better.
        [systemd_analyze, "security", "--offline=yes", "--threshold=20", unit.name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- Dockerfile --------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, argument text and here-document body."""

    keyword: str
    arguments: str
    heredoc: str | None = None

    def exec_form(self) -> list[str]:
        """The JSON (exec-form) argument list, e.g. of ENTRYPOINT or CMD."""
        words = json.loads(self.arguments.split(" CMD ", 1)[-1])
        assert isinstance(words, list) and all(isinstance(w, str) for w in words)
        return words


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, continuations joined, heredocs read."""
    lines = path.read_text().splitlines()
    instructions = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        keyword, _, arguments = line.partition(" ")
        heredoc = None
        marker = re.search(r"<<-?'?\"?(\w+)'?\"?\s*$", arguments)
        if marker:
            end = lines.index(marker.group(1), i)
            heredoc = "\n".join(lines[i:end]) + "\n"
            i = end + 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), heredoc))
    return instructions


def final_stage() -> list[Instruction]:
    instructions = dockerfile_instructions(DOCKERFILE)
    starts = [n for n, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert starts, "no FROM"
    return instructions[starts[-1] :]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [ins for ins in stage if ins.keyword == keyword]
    assert len(found) == 1, f"{keyword}: {found}"
    return found[0]


def test_dockerfile_runs_as_non_root_and_exposes_the_daemon() -> None:
    stage = final_stage()
    user = only(stage, "USER").arguments.split(":")[0]
    assert user not in ("root", "0"), user
    # The user is created in this stage (a name no base image has).
    assert any(
        ins.keyword == "RUN" and "useradd" in ins.arguments and user in ins.arguments
        for ins in stage
    )
    assert only(stage, "EXPOSE").arguments == str(DAEMON_PORT)
    assert only(stage, "ENTRYPOINT").exec_form() == ["driftmon"]
    args = driftmon_args(only(stage, "CMD").exec_form())
    assert args.command == "run"
    assert args.config == "/etc/driftmon/driftmon.yaml"
    assert args.listen == f"0.0.0.0:{DAEMON_PORT}"
    environment = " ".join(ins.arguments for ins in stage if ins.keyword == "ENV")
    assert "NUMBA_CACHE_DIR=/var/cache/driftmon/numba" in environment


def test_dockerfile_installs_the_package_from_files_the_context_keeps() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    assert instructions[0].keyword in ("ARG", "FROM")
    base = next(ins for ins in instructions if ins.keyword == "ARG")
    # A slim Python base, pinned to a patch release.
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+\.\d+-slim-\w+", base.arguments), base
    assert any(ins.keyword == "RUN" and "pip install /src" in ins.arguments for ins in instructions)
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for ins in instructions:
        if ins.keyword != "COPY" or "--from=" in ins.arguments:
            continue
        *sources, _destination = ins.arguments.split()
        for source in sources:
            assert (REPO / source).exists(), source
            assert source not in ignored, f"{source} is in .dockerignore"


def test_dockerfile_healthcheck_probes_a_real_daemon() -> None:
    healthcheck = only(final_stage(), "HEALTHCHECK")
    assert healthcheck.arguments.split()[0].startswith("--")
    command = healthcheck.exec_form()
    assert command[0] == "python"  # the slim image has no curl
    local = f"http://127.0.0.1:{DAEMON_PORT}/-/healthy"
    assert any(local in word for word in command), command
    with DaemonProcess(DEMO_CONFIG) as daemon:
        probe = [
            sys.executable,
            *[w.replace(local, daemon.url + "/-/healthy") for w in command[1:]],
        ]
        assert subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0
        url = daemon.url
    # The daemon is gone: the same probe now fails.
    stopped = [sys.executable, *[w.replace(local, url + "/-/healthy") for w in command[1:]]]
    assert subprocess.run(stopped, capture_output=True, timeout=30, check=False).returncode != 0


def kernel_dispatchers() -> dict[str, list[str]]:
    """``{kernel module: [names of the kernels numba compiles on their own]}``.

    Kernels marked ``inline="always"`` are compiled only into their callers
    and never cached under their own name.
    """
    from numba.core.registry import CPUDispatcher

    import driftmon.kernels

    found: dict[str, list[str]] = {}
    for info in pkgutil.iter_modules(driftmon.kernels.__path__):
        module = importlib.import_module(f"driftmon.kernels.{info.name}")
        found[info.name] = [
            value.py_func.__qualname__
            for value in vars(module).values()
            if isinstance(value, CPUDispatcher)
            and value.__module__ == module.__name__
            and value.targetoptions.get("inline", "never") != "always"
        ]
    return found


def test_dockerfile_warm_up_caches_every_kernel(tmp_path: Path) -> None:
    stage = final_stage()
    (warm_up,) = [
        ins for ins in stage if ins.keyword == "RUN" and ins.heredoc and "warm_up" in ins.heredoc
    ]
    assert warm_up.arguments.startswith("python -")
    # It runs as the unprivileged user, after NUMBA_CACHE_DIR is set.
    position = stage.index(warm_up)
    assert any(ins.keyword == "USER" for ins in stage[:position])
    assert any(
        "NUMBA_CACHE_DIR" in ins.arguments for ins in stage[:position] if ins.keyword == "ENV"
    )
    cache = tmp_path / "numba"
    environment = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "NUMBA_CPU_NAME": ""}
    done = subprocess.run(
        [sys.executable, "-"],
        input=warm_up.heredoc,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"\d+ kernels cached from \d+ modules", done.stdout), done.stdout
    indexed = {path.name.split("-")[0] for path in cache.rglob("*.nbi")}
    kernels = kernel_dispatchers()
    assert set(kernels) >= {"binning", "divergence", "special"}
    missing = [
        f"{module}.{name}"
        for module, names in kernels.items()
        for name in names
        if f"{module}.{name}" not in indexed
    ]
    assert not missing, f"warm_up() leaves these kernels to compile at start: {missing}"


# --- docker compose ----------------------------------------------------------


def compose() -> dict[str, Any]:
    document = load_yaml(COMPOSE)
    assert isinstance(document, dict)
    return document


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """``(source, target)`` of every bind mount (a source starting with ``.``)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append((source, target))
    return mounts


def test_compose_services_and_images() -> None:
    services = compose()["services"]
    assert {"driftmon", "prometheus", "alertmanager", "grafana"} <= set(services)
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            context = COMPOSE.parent / build["context"]
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
        else:
            image = service["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest", f"{name}: pin the image tag ({image})"
    driftmon = services["driftmon"]
    args = driftmon_args(driftmon["command"])
    assert args.command == "demo"
    assert args.listen == f"0.0.0.0:{DAEMON_PORT}"
    assert f"{DAEMON_PORT}:{DAEMON_PORT}" in driftmon["ports"]


def test_compose_mounts_exist_in_the_repository() -> None:
    services = compose()["services"]
    named = set(compose().get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: undeclared volume {source}"
    assert ("./prometheus/prometheus.yml", "/etc/prometheus/prometheus.yml") in bind_mounts(
        services["prometheus"]
    )
    assert ("./rules", "/etc/prometheus/rules") in bind_mounts(services["prometheus"])
    assert ("./alertmanager/alertmanager.yml", "/etc/alertmanager/alertmanager.yml") in (
        bind_mounts(services["alertmanager"])
    )
    grafana_sources = {source for source, _ in bind_mounts(services["grafana"])}
    assert grafana_sources >= {
        "./grafana/provisioning/datasources",
        "./grafana/provisioning/dashboards",
        "./grafana/dashboards",
    }


def test_compose_addresses_agree_with_the_configs() -> None:
    services = compose()["services"]
    prometheus = load_yaml(PROMETHEUS_YML)
    # Prometheus in compose reads the file mounted at its --config.file.
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]
    for job in prometheus["scrape_configs"]:
        if job["job_name"] != "driftmon":
            continue
        for static in job["static_configs"]:
            for target in static["targets"]:
                assert host_port(target) == ("driftmon", DAEMON_PORT)
    for manager in prometheus["alerting"]["alertmanagers"]:
        for static in manager["static_configs"]:
            for target in static["targets"]:
                assert host_port(target) == ("alertmanager", 9093)
    for receiver in load_yaml(ALERTMANAGER_YML)["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            host, port = host_port(webhook["url"])
            assert host in services, f"{webhook['url']}: no compose service {host}"
            assert f"0.0.0.0:{port}" in services[host]["command"]


def test_compose_grafana_provisioning_points_at_the_mounts() -> None:
    services = compose()["services"]
    mounts = bind_mounts(services["grafana"])
    dashboards_target = dict(mounts)["./grafana/dashboards"]
    providers = [
        provider
        for path in sorted((DEPLOY / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
        for provider in load_yaml(path).get("providers", [])
    ]
    assert providers, "no Grafana dashboard provider"
    for provider in providers:
        path = Path(provider["options"]["path"])
        assert path == Path(dashboards_target) or Path(dashboards_target) in path.parents, (
            f"provider {provider.get('name')} reads {path}, compose mounts the dashboards at "
            f"{dashboards_target}"
        )
    sources = [
        source
        for path in sorted((DEPLOY / "grafana" / "provisioning" / "datasources").glob("*.y*ml"))
        for source in load_yaml(path).get("datasources", [])
        if source.get("type") == "prometheus"
    ]
    assert sources, "no Prometheus data source"
    for source in sources:
        assert host_port(source["url"]) == ("prometheus", 9090)


# --- Kubernetes --------------------------------------------------------------


def kubernetes_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in load_documents(path):
            assert isinstance(doc, dict), path
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"
            documents.append(doc)
    return documents


def by_kind(kind: str) -> dict[str, Any]:
    (document,) = [doc for doc in kubernetes_documents() if doc["kind"] == kind]
    return document


def configmap_config() -> str:
    text = by_kind("ConfigMap")["data"]["driftmon.yaml"]
    assert isinstance(text, str)
    return text


def test_kubernetes_manifests_parse_with_kinds_and_versions() -> None:
    kinds = {(doc["kind"], doc["apiVersion"]) for doc in kubernetes_documents()}
    assert kinds == {
        ("ConfigMap", "v1"),
        ("Service", "v1"),
        ("StatefulSet", "apps/v1"),
        ("ServiceMonitor", "monitoring.coreos.com/v1"),
        ("PrometheusRule", "monitoring.coreos.com/v1"),
        ("Kustomization", "kustomize.config.k8s.io/v1beta1"),
    }
    for doc in kubernetes_documents():
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], doc["kind"]
    listed = by_kind("Kustomization")["resources"]
    on_disk = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk


def test_kubernetes_config_passes_driftmon_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "driftmon.yaml"
    config_file.write_text(configmap_config())
    assert driftmon_main(["check", "-c", str(config_file)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{config_file}: ok")


def test_kubernetes_statefulset_wiring() -> None:
    statefulset = by_kind("StatefulSet")
    config = yaml.safe_load(configmap_config())
    pod = statefulset["spec"]["template"]["spec"]
    assert statefulset["spec"]["replicas"] == 1
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}

    args = driftmon_args(container["args"])
    assert args.command == "run"
    config_volume = next(
        name for name, path in mounts.items() if Path(args.config).parent == Path(path)
    )
    assert volumes[config_volume]["configMap"]["name"] == by_kind("ConfigMap")["metadata"]["name"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert host_port(args.listen or config["server"]["listen"])[1] == ports["http"]

    # Checkpoints live on the claim, at the config's state.dir.
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert mounts[claim["metadata"]["name"]] == config["state"]["dir"]

    for probe, path in (
        ("livenessProbe", "/-/healthy"),
        ("readinessProbe", "/-/ready"),
        ("startupProbe", "/-/healthy"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    every = [container, *pod.get("initContainers", [])]
    for each in every:
        assert each["securityContext"]["readOnlyRootFilesystem"] is True, each["name"]
        assert each["securityContext"]["allowPrivilegeEscalation"] is False, each["name"]

    # numba needs a writable cache: an emptyDir, filled from the image's warm cache.
    environment = {item["name"]: item.get("value") for item in container.get("env", [])}
    cache_dir = environment["NUMBA_CACHE_DIR"]
    cache_volume = next(name for name, path in mounts.items() if path == cache_dir)
    assert "emptyDir" in volumes[cache_volume]
    (init,) = pod["initContainers"]
    init_mounts = {mount["name"]: mount["mountPath"] for mount in init["volumeMounts"]}
    assert init["image"] == container["image"]
    assert init["command"][-2:] == ["/var/cache/driftmon/numba/.", init_mounts[cache_volume] + "/"]


def test_kubernetes_service_and_monitor_select_the_pods() -> None:
    statefulset = by_kind("StatefulSet")
    service = by_kind("Service")
    monitor = by_kind("ServiceMonitor")
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    service_ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert service_ports["http"]["port"] == DAEMON_PORT
    assert service_ports["http"]["targetPort"] == "http"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in service_ports
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    # The operator names the job after the Service: job="driftmon", as in prometheus.yml.
    assert "jobLabel" not in monitor["spec"]
    assert service["metadata"]["name"] == "driftmon"


# --- README ------------------------------------------------------------------


def test_readme_covers_every_deploy_file() -> None:
    text = README.read_text()
    ours = [
        path.relative_to(DEPLOY).as_posix()
        for path in DEPLOY.rglob("*")
        if path.is_file()
        and "grafana" not in path.relative_to(DEPLOY).parts
        and "__pycache__" not in path.parts
        and path != README
    ]
    assert ours
    for name in ours:
        assert name in text, f"deploy/README.md does not mention {name}"
