"""What the pages compute: per-bin contributions add up to the published divergences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftmon.config import parse_config
from driftmon.engine import Engine
from driftmon.pages import monitor_views, per_bin_contributions
from driftmon.pages.model import firing_first

T0 = 1_800_000_000.0


@pytest.mark.parametrize("log_base", ["e", 2])
@pytest.mark.parametrize("smoothing", [0.5, 0.0])
def test_contributions_add_up_to_the_divergences(
    tmp_path: Path, log_base: object, smoothing: float
) -> None:
    rng = np.random.default_rng(5)
    lines = ["x,c"] + [f"{rng.normal():.4f},{rng.choice(['a', 'b', 'c'])}" for _ in range(500)]
    (tmp_path / "ref.csv").write_text("\n".join(lines) + "\n")
    config = parse_config(
        {
            "engine": {"log_base": log_base},
            "defaults": {"smoothing": smoothing},
            "streams": [
                {
                    "name": "s",
                    "reference": {"file": "ref.csv"},
                    "window": {"samples": 400},
                    "features": [
                        {"name": "x", "type": "numeric", "bins": {"kind": "quantile", "count": 8}},
                        {"name": "c", "type": "categorical", "categories": ["a", "b"]},
                    ],
                }
            ],
            "alerts": [
                {"name": "r", "match": {"stream": "s", "feature": "c"}, "metric": "psi",
                 "threshold": 0.01}
            ],
        },
        base_dir=tmp_path,
    )
    engine = Engine(config, now=T0)
    x = list(rng.normal(0.7, 1.3, 400)) + [None] * 3
    c = list(rng.choice(["a", "b", "c", "d"], 403))
    engine.ingest("s", 403, {"x": x, "c": c}, T0)
    evaluation = engine.evaluate(T0)
    views = monitor_views(evaluation)
    assert [v.feature for v in firing_first(views)] == ["c", "x"]  # c fires, x has no rule
    for view in views:
        assert view.samples == 400 and view.live_counts.sum() == pytest.approx(400)
        metrics = ["kl", "kl_reverse", "js", "psi", "hellinger"]
        if view.type == "numeric":
            metrics.append("wasserstein")
        for metric in metrics:
            terms = per_bin_contributions(view, metric, config.engine.log_base)
            assert terms is not None and terms.shape == view.live_counts.shape
            total = float(terms.sum())
            published = view.values[metric]
            if metric == "hellinger":
                total = total**0.5
            if np.isinf(published):
                assert np.isinf(total), (view.feature, metric)
            else:
                expected = pytest.approx(published, rel=1e-9, abs=1e-12)
                assert total == expected, (view.feature, metric)
        assert per_bin_contributions(view, "p_value", "e") is None
