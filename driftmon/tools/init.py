"""``driftmon init``: a complete, commented config inferred from a reference file.

The written config passes ``driftmon check`` and ``driftmon run`` serves it
as is: one feature per useful column (see :mod:`driftmon.config.infer`), the
reference as a ``file:`` relative to the config, a window and evaluation
period to start from, and p-value-gated alert rules. A summary (columns
seen, features written, columns skipped and why) goes to standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from driftmon.config.infer import Inference

DATA_FORMATS = ("parquet", "arrow", "csv", "ndjson", "json")


def add_init_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``driftmon init`` on the CLI's subcommands."""
    init = commands.add_parser(
        "init",
        help="write a config inferred from a reference file",
        description="Read a reference file (Parquet, Arrow IPC/Feather, CSV, NDJSON, JSON) and "
        "write a commented config with one feature per useful column, typed and binned from "
        "the data, and recommended alert rules. A summary goes to standard error.",
    )
    init.add_argument("--reference", required=True, metavar="DATA", help="the reference file")
    init.add_argument("--stream", metavar="NAME", help="stream name (default: the file's name)")
    init.add_argument(
        "--exclude", action="extend", nargs="+", default=[], metavar="COL",
        help="columns to leave out",
    )  # fmt: skip
    init.add_argument("--format", choices=DATA_FORMATS, help="default: by suffix")
    init.add_argument(
        "-o", "--output", default="driftmon.yaml", metavar="FILE",
        help="the config to write (default driftmon.yaml; - for standard output)",
    )  # fmt: skip
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=run_init)


def stream_name(path: Path) -> str:
    """A stream name from a file name: its stem, with characters a URL part cannot hold as ``_``."""
    stem = path.name.split(".")[0] or "data"
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)
    return name if re.match(r"[A-Za-z0-9_]", name) else f"s{name}"


def _yaml(value: object) -> str:
    """A scalar or list in YAML flow style (JSON is YAML; strings always quoted)."""
    return json.dumps(value, ensure_ascii=False)


def _p_value_correction_known() -> bool:
    """Whether this driftmon's config loader reads ``p_value_correction`` in an alert rule."""
    from driftmon.config import alerts

    return "p_value_correction" in getattr(alerts, "_ALERT_KEYS", ())


def render_config(
    inference: Inference, stream: str, reference: str, command: str, config_name: str
) -> str:
    """The YAML text of the config (comments included)."""
    kept = len(inference.features)
    out = [
        f"# driftmon config written by `{command}`",
        f"# from {inference.path.name}: {inference.rows} rows, {inference.columns} columns, "
        f"{kept} features, {len(inference.skipped)} columns skipped (see the end of features).",
        "# Edit freely: bins and categories below are what the data suggested.",
        "#",
        f"#   driftmon check -c {config_name}   # validate",
        f"#   driftmon run -c {config_name}     # serve; POST rows to /v1/streams/{stream}/rows",
        "#",
        "# Relative paths resolve against this file's folder.",
        "server:",
        "  listen: 127.0.0.1:9108          # host:port; 0.0.0.0 to accept other machines",
        "engine:",
        "  evaluate_every: 15s             # how often divergences and alerts are computed",
        "state:",
        "  dir: driftmon-state             # checkpoints of windows and alerts; leave out for none",
        "  checkpoint_every: 60s",
        "defaults:",
        "  window: {length: 15m, panes: 15}   # live data: the last 15 minutes, 1-minute panes",
        "  smoothing: 0.5",
        "streams:",
        f"  - name: {_yaml(stream)}",
    ]
    if inference.time_fields:
        out.append(
            f"    # time_field: {_yaml(inference.time_fields[0])}   # event time for "
            "`driftmon replay` (epoch seconds or RFC 3339)"
        )
    out += [
        f"    reference: {{file: {_yaml(reference)}}}",
        "    features:",
    ]
    for feature in inference.features:
        out.append(f"      # {feature.note}")
        if feature.type == "numeric":
            out.append(
                f"      - {{name: {_yaml(feature.name)}, type: numeric, "
                "bins: {kind: quantile, count: 10}}"
            )
        elif feature.categories is not None:
            out.append(
                f"      - {{name: {_yaml(feature.name)}, type: categorical, "
                f"categories: {_yaml(list(feature.categories))}}}"
            )
        else:
            out.append(
                f"      - {{name: {_yaml(feature.name)}, type: categorical, "
                f"top_k: {feature.top_k}}}   # the most frequent; the rest count as other"
            )
    if inference.skipped:
        out.append("      # Columns left out:")
        out += [f"      #   {_yaml(name)}: {reason}" for name, reason in inference.skipped]
    correction = "    p_value_correction: holm       # over the stream's features, per evaluation"
    if not _p_value_correction_known():
        # TODO(p_value_correction): this driftmon does not read the key yet; once it
        # does, the line is written live (see _p_value_correction_known).
        correction = (
            "    # p_value_correction: holm     # not read by this driftmon version yet: "
            "uncomment once it is"
        )
    out += [
        "alerts:",
        "  # Recommended start: fire on a shift that is both large (PSI) and statistically",
        "  # significant (p-value), so small windows do not page on noise.",
        "  - name: drift",
        f"    match: {{stream: {_yaml(stream)}, feature: \"*\"}}",
        "    metric: psi",
        "    threshold: 0.1                 # PSI 0.1-0.25: a moderate shift",
        "    for: 5m",
        "    clear_below: 0.08",
        "    min_samples: 500",
        "    max_p_value: 0.01",
        correction,
        "    severity: warning",
        "  - name: drift-major",
        f"    match: {{stream: {_yaml(stream)}, feature: \"*\"}}",
        "    metric: psi",
        "    threshold: 0.25                # PSI over 0.25: a major shift",
        "    for: 10m",
        "    min_samples: 500",
        "    max_p_value: 0.001",
        correction,
        "    severity: critical",
    ]
    return "\n".join(out) + "\n"


def run_init(args: argparse.Namespace) -> int:
    """``driftmon init``: write the config (or print it with ``-o -``); summary on stderr."""
    from driftmon.config.infer import infer_file

    reference = Path(args.reference)
    to_stdout = args.output == "-"
    output = Path(args.output)
    if not to_stdout and output.exists() and not args.force:
        print(f"driftmon init: {output} exists; give --force to overwrite it", file=sys.stderr)
        return 1
    stream = args.stream or stream_name(reference)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", stream):
        print(f"driftmon init: --stream {stream!r}: letters, digits, _ . - only", file=sys.stderr)
        return 1

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        inference = infer_file(
            reference, args.format, exclude=set(args.exclude), progress=progress
        )
    except (ValueError, OSError) as exc:
        print(f"driftmon init: {exc}", file=sys.stderr)
        return 1
    if not inference.features:
        print(inference.summary(), file=sys.stderr)
        print("driftmon init: no column to monitor; nothing written", file=sys.stderr)
        return 1
    folder = Path.cwd() if to_stdout else output.resolve().parent
    relative = os.path.relpath(reference.resolve(), folder)
    words = ["driftmon init --reference", _shell_word(str(reference))]
    if args.stream:
        words += ["--stream", _shell_word(args.stream)]
    if args.exclude:
        words += ["--exclude", *map(_shell_word, args.exclude)]
    command = " ".join(words)
    text = render_config(
        inference, stream, Path(relative).as_posix(), command, "FILE" if to_stdout else output.name
    )
    if to_stdout:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    print(inference.summary(), file=sys.stderr)
    if not to_stdout:
        print(
            f"wrote {output}: stream {stream!r}, {len(inference.features)} features; "
            f"next: driftmon check -c {output} && driftmon run -c {output}",
            file=sys.stderr,
        )
    return 0


def _shell_word(word: str) -> str:
    return word if re.fullmatch(r"[A-Za-z0-9_./=:-]+", word) else json.dumps(word)
