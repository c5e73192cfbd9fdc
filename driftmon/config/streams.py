"""The ``streams`` section: names, references, windows, bins and categories."""

from __future__ import annotations

import difflib
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from driftmon.config.errors import Errors, format_number, join_path, show
from driftmon.config.model import (
    MAX_BINS,
    CloudEventsMapping,
    DataFormat,
    EdgesBins,
    FeatureConfig,
    FeatureType,
    NumericBins,
    QuantileBins,
    ReferenceConfig,
    StreamConfig,
    UniformBins,
    Window,
)
from driftmon.config.readers import (
    BIN_COUNT,
    POSITIVE_INT,
    SMOOTHING,
    Section,
    choice_reader,
    float_reader,
    open_section,
    path_reader,
    read_list,
    read_str,
)
from driftmon.config.sections import Defaults, read_window
from driftmon.sources.media import DATA_FORMATS, FILE_FORMATS

_log = logging.getLogger("driftmon.config")

_FORMATS: tuple[DataFormat, ...] = get_args(DataFormat)  # the DATA_FORMATS, typed
_STREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def _read_stream_name(value: object, path: str, errs: Errors) -> str | None:
    name = read_str(value, path, errs)
    if name is not None and not _STREAM_NAME.match(name):
        errs.add(
            path,
            'may hold only letters, digits, "_", "." and "-" (it is part of URLs), '
            f"got {show(name)}",
        )
        return None
    return name


def _read_feature_name(value: object, path: str, errs: Errors) -> str | None:
    name = read_str(value, path, errs)
    if name is not None and ("/" in name or not name.isprintable()):
        errs.add(
            path,
            f'may not hold "/" or unprintable characters (it is part of URLs), got {show(name)}',
        )
        return None
    return name


def _read_reference(
    value: object, path: str, errs: Errors, base_dir: Path, snapshots_must_exist: bool
) -> ReferenceConfig | None:
    section = open_section(value, path, errs, ("file", "warmup", "snapshot", "format"))
    if section is None:
        return None
    given = [kind for kind in ("file", "warmup", "snapshot") if kind in section]
    if len(given) != 1:
        got = "none" if not given else " and ".join(given)
        errs.add(path, f"expected exactly one of file, warmup, snapshot, got {got}")
        return None
    kind = given[0]
    if "format" in section and kind != "file":
        errs.add(section.at("format"), f"only with file, not with {kind}")
        return None
    if kind == "warmup":
        rows = section.read("warmup", POSITIVE_INT)
        return None if rows is None else ReferenceConfig(kind="warmup", warmup_rows=rows)
    must_exist = snapshots_must_exist or kind != "snapshot"
    reference_path = section.read(kind, path_reader(base_dir, must_exist=must_exist))
    if kind == "snapshot":
        if reference_path is None:
            return None
        return ReferenceConfig(kind="snapshot", path=reference_path)
    data_format: DataFormat | None = None
    if "format" in section:
        chosen = section.read("format", choice_reader("format", DATA_FORMATS))
        data_format = next((known for known in _FORMATS if known == chosen), None)
    elif reference_path is not None:
        by_suffix = FILE_FORMATS.get(reference_path.suffix.lower())
        data_format = next((known for known in _FORMATS if known == by_suffix), None)
        if data_format is None:
            errs.add(
                section.at("file"),
                f"cannot tell the format from the suffix {show(reference_path.suffix)}: "
                "add format: parquet, arrow, csv, ndjson or json",
            )
    if reference_path is None or data_format is None:
        return None
    return ReferenceConfig(kind="file", path=reference_path, format=data_format)


def _read_bins(value: object, path: str, errs: Errors) -> NumericBins | None:
    if not isinstance(value, dict):
        errs.add(path, f"expected a mapping, got {show(value)}")
        return None
    kinds = ("uniform", "edges", "quantile")
    kind_path = join_path(path, "kind")
    kind_value = value.get("kind")
    if kind_value is None:
        errs.add(kind_path, "missing required key (uniform, edges or quantile)")
        Section(value, path, errs, ("kind", "lo", "hi", "count", "edges"))
        return None
    kind = choice_reader("bins kind", kinds)(kind_value, kind_path, errs)
    if kind is None:
        Section(value, path, errs, ("kind", "lo", "hi", "count", "edges"))
        return None
    if kind == "uniform":
        section = Section(value, path, errs, ("kind", "lo", "hi", "count"))
        lo = section.require("lo", float_reader())
        hi = section.require("hi", float_reader())
        count = section.require("count", BIN_COUNT)
        if lo is not None and hi is not None and hi <= lo:
            errs.add(
                section.at("hi"),
                f"must be > lo ({format_number(lo)}), got {show(section.raw('hi'))}",
            )
            return None
        if lo is None or hi is None or count is None:
            return None
        width = (hi - lo) / count
        if not (math.isfinite(width) and width > 0 and lo + width > lo):
            # Binning computes floor((v - lo) / width): the width must be a usable float.
            errs.add(
                path,
                f"[lo, hi) = [{format_number(lo)}, {format_number(hi)}) cannot be cut into "
                f"{count} bins in floating point",
            )
            return None
        return UniformBins(lo=lo, hi=hi, count=count)
    if kind == "quantile":
        section = Section(value, path, errs, ("kind", "count"))
        count = section.require("count", BIN_COUNT)
        return None if count is None else QuantileBins(count=count)
    section = Section(value, path, errs, ("kind", "edges"))
    edges = section.require("edges", read_list)
    if edges is None:
        return None
    edges_path = section.at("edges")
    if len(edges) < 2:
        errs.add(edges_path, f"needs at least 2 edges (1 bin), got {len(edges)}")
        return None
    if len(edges) > MAX_BINS + 1:
        errs.add(edges_path, f"must be at most {MAX_BINS + 1} edges, got {len(edges)}")
        return None
    read_edge = float_reader()
    parsed: list[float] = []
    ok = True
    for index, item in enumerate(edges):
        edge_path = f"{edges_path}[{index}]"
        edge = read_edge(item, edge_path, errs)
        if edge is None:
            ok = False
            continue
        if parsed and ok and edge <= parsed[-1]:
            errs.add(
                edge_path,
                f"edges must increase: must be > the previous edge ({format_number(parsed[-1])}), "
                f"got {show(item)}",
            )
            ok = False
        parsed.append(edge)
    return EdgesBins(edges=tuple(parsed)) if ok else None


def _read_categories(value: object, path: str, errs: Errors) -> tuple[str, ...] | None:
    items = read_list(value, path, errs)
    if items is None:
        return None
    if not items:
        errs.add(path, "must list at least one category")
        return None
    if len(items) > MAX_BINS:
        errs.add(path, f"must list at most {MAX_BINS} categories, got {len(items)}")
        return None
    categories: list[str] = []
    first_at: dict[str, int] = {}
    ok = True
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        # Data values that are ints match by their text (docs/configuration.md), so integer-coded
        # categories may be written as YAML ints. YAML 1.1 also reads yes/no/on/off as
        # booleans; taking them silently would turn a "no" category into "false".
        if isinstance(item, bool):
            spellings = "yes, on and true" if item else "no, off and false"
            errs.add(
                item_path,
                f"YAML reads an unquoted {spellings} as the boolean {show(item)}: "
                "quote the category",
            )
            ok = False
            continue
        if isinstance(item, int):
            text = str(item) if item.bit_length() <= 200 else None
            if text is None:
                errs.add(item_path, "integer too large to be a category")
                ok = False
                continue
        elif isinstance(item, str):
            text = item
        else:
            errs.add(item_path, f"expected a string or an integer, got {show(item)}")
            ok = False
            continue
        if text == "":
            errs.add(item_path, "must not be empty")
            ok = False
            continue
        if text in first_at:
            errs.add(
                item_path, f"duplicate category {show(text)} (first at {path}[{first_at[text]}])"
            )
            ok = False
            continue
        first_at[text] = index
        categories.append(text)
    return tuple(categories) if ok else None


_FEATURE_KEYS = ("name", "type", "bins", "categories", "top_k", "smoothing")


@dataclass
class Monitor:
    """What alert matching needs of a feature, kept even when the rest of its stream is bad."""

    stream: str
    feature: str
    type: FeatureType | None
    window: Window | None


def _read_feature(
    value: object, path: str, errs: Errors, smoothing_default: float
) -> tuple[FeatureConfig | None, str | None, FeatureType | None]:
    """(the feature or None, its name if valid, its type if valid)."""
    section = open_section(value, path, errs, _FEATURE_KEYS)
    if section is None:
        return None, None, None
    errors_before = len(errs)
    name = section.require("name", _read_feature_name)
    type_name = section.require("type", choice_reader("type", ("numeric", "categorical")))
    feature_type: FeatureType | None = None
    if type_name == "numeric":
        feature_type = "numeric"
    elif type_name == "categorical":
        feature_type = "categorical"
    smoothing = section.read("smoothing", SMOOTHING)
    if smoothing is None:
        smoothing = smoothing_default
    bins: NumericBins | None = None
    categories: tuple[str, ...] | None = None
    top_k: int | None = None
    if feature_type == "numeric":
        for key in ("categories", "top_k"):
            if key in section:
                errs.add(section.at(key), "only for categorical features")
        bins = section.require("bins", _read_bins)
    elif feature_type == "categorical":
        if "bins" in section:
            errs.add(section.at("bins"), "only for numeric features")
        if "categories" in section and "top_k" in section:
            errs.add(path, "expected exactly one of categories, top_k, got both")
        elif "categories" not in section and "top_k" not in section:
            errs.add(path, "a categorical feature needs categories: [...] or top_k: N")
        else:
            categories = section.read("categories", _read_categories)
            top_k = section.read("top_k", BIN_COUNT)
    if len(errs) > errors_before or name is None or feature_type is None:
        return None, name, feature_type
    return (
        FeatureConfig(
            name=name,
            type=feature_type,
            smoothing=smoothing,
            bins=bins,
            categories=categories,
            top_k=top_k,
        ),
        name,
        feature_type,
    )


def _read_feature_names(
    value: object, path: str, errs: Errors, known: Sequence[str] | None, stream: str
) -> tuple[str, ...] | None:
    items = read_list(value, path, errs)
    if items is None:
        return None
    names: list[str] = []
    first_at: dict[str, int] = {}
    ok = True
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        name = read_str(item, item_path, errs)
        if name is None:
            ok = False
        elif name in first_at:
            errs.add(item_path, f"{show(name)} is listed twice (first at {path}[{first_at[name]}])")
            ok = False
        elif known is not None and name not in known:
            hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            suffix = f' (did you mean "{hint[0]}"?)' if hint else ""
            errs.add(item_path, f"no feature {show(name)} in stream {show(stream)}{suffix}")
            ok = False
        else:
            first_at[name] = index
            names.append(name)
    return tuple(names) if ok else None


def _read_cloudevents(
    value: object, path: str, errs: Errors, known: Sequence[str] | None, stream: str
) -> CloudEventsMapping | None:
    section = open_section(value, path, errs, ("service", "namespace", "inputs", "outputs"))
    if section is None:
        return None
    errors_before = len(errs)
    service = section.require("service", read_str)
    namespace = section.read("namespace", read_str)
    inputs = (
        section.read("inputs", lambda v, p, e: _read_feature_names(v, p, e, known, stream)) or ()
    )
    outputs = (
        section.read("outputs", lambda v, p, e: _read_feature_names(v, p, e, known, stream)) or ()
    )
    for index, name in enumerate(outputs):
        if name in inputs:
            # A feature fed by both requests and responses would count each row twice.
            errs.add(
                f"{section.at('outputs')}[{index}]",
                f"{show(name)} is already an input (inputs[{inputs.index(name)}])",
            )
    if "inputs" not in section and "outputs" not in section:
        errs.add(path, "maps no feature: give inputs: [...] or outputs: [...]")
    if len(errs) > errors_before or service is None:
        return None
    return CloudEventsMapping(service=service, namespace=namespace, inputs=inputs, outputs=outputs)


def _infer_marker(value: object) -> tuple[bool, list[object] | None]:
    """Whether ``features`` asks for inference (``infer``, or a list holding ``infer``),
    and its entries."""
    if value == "infer":
        return True, []
    if isinstance(value, list) and "infer" in value:
        return True, value
    return False, None


def _inferred_features(
    path: str,
    errs: Errors,
    reference: ReferenceConfig | None,
    smoothing: float,
    explicit: list[FeatureConfig],
    stream: str | None,
    window: Window | None,
    monitors: list[Monitor],
) -> list[FeatureConfig]:
    """``features: infer``: the reference file's columns (driftmon.config.infer), explicit
    entries replacing inferred ones of their name."""
    # Imported here, not above: it reads data files with pyarrow (0.4 s to import),
    # which only a config that says ``infer`` needs.
    from driftmon.config.infer import infer_file, merge_features

    if reference is None:
        return explicit
    if reference.kind != "file" or reference.path is None:
        errs.add(path, f"infer needs a file reference, not {reference.kind}")
        return explicit
    try:
        inference = infer_file(reference.path, reference.format)
    except (ValueError, OSError) as exc:
        errs.add(path, f"cannot infer features from {reference.path}: {exc}")
        return explicit
    _log.info("stream %s: features inferred: %s", stream, inference.summary())
    inferred = [feature.config(smoothing) for feature in inference.features]
    merged = merge_features(inferred, explicit)
    if not merged:
        errs.add(path, f"infer found no column to monitor in {reference.path}")
    known = {feature.name for feature in explicit}
    if stream is not None:
        monitors.extend(
            Monitor(stream, feature.name, feature.type, window)
            for feature in merged
            if feature.name not in known
        )
    return merged


_STREAM_KEYS = ("name", "time_field", "reference", "window", "smoothing", "features", "cloudevents")


def read_stream(
    value: object,
    path: str,
    errs: Errors,
    defaults: Defaults,
    base_dir: Path,
    monitors: list[Monitor],
    snapshots_must_exist: bool,
) -> tuple[StreamConfig | None, str | None, bool]:
    """(the stream or None, its name if valid, whether every feature name was readable)."""
    section = open_section(value, path, errs, _STREAM_KEYS)
    if section is None:
        return None, None, False
    errors_before = len(errs)
    name = section.require("name", _read_stream_name)
    time_field = section.read("time_field", read_str)
    reference = section.require(
        "reference", lambda v, p, e: _read_reference(v, p, e, base_dir, snapshots_must_exist)
    )
    window = section.read("window", read_window) if "window" in section else defaults.window
    smoothing = section.read("smoothing", SMOOTHING)
    if smoothing is None:
        smoothing = defaults.smoothing
    features: list[FeatureConfig] = []
    names_complete = True
    infer, feature_items = _infer_marker(section.raw("features"))
    if not infer:
        feature_items = section.require("features", read_list)
    if feature_items is None:
        names_complete = False
    elif not feature_items and not infer:
        errs.add(section.at("features"), "must list at least one feature")
    first_at: dict[str, int] = {}
    for index, item in enumerate(feature_items or ()):
        if infer and item == "infer":
            continue
        feature_path = f"{section.at('features')}[{index}]"
        feature, feature_name, feature_type = _read_feature(item, feature_path, errs, smoothing)
        if feature_name is None:
            names_complete = False
            continue
        if feature_name in first_at:
            errs.add(
                join_path(feature_path, "name"),
                f"duplicate feature name {show(feature_name)} "
                f"(first at {section.at('features')}[{first_at[feature_name]}])",
            )
            continue
        first_at[feature_name] = index
        if name is not None:
            monitors.append(Monitor(name, feature_name, feature_type, window))
        if feature is not None:
            features.append(feature)
    if infer:
        features = _inferred_features(
            section.at("features"), errs, reference, smoothing, features, name, window, monitors
        )
    cloudevents: CloudEventsMapping | None = None
    if "cloudevents" in section:
        known = list(first_at) if names_complete else None
        cloudevents = section.read(
            "cloudevents",
            lambda v, p, e: _read_cloudevents(v, p, e, known, name or "?"),
        )
    if len(errs) > errors_before or name is None or reference is None or window is None:
        return None, name, names_complete and name is not None
    stream = StreamConfig(
        name=name,
        reference=reference,
        window=window,
        features=tuple(features),
        time_field=time_field,
        cloudevents=cloudevents,
    )
    return stream, name, names_complete
