"""What the divergences read when nothing drifted: the noise floor to set thresholds above.

A numeric monitor with 10 equal-mass regular bins (plus underflow, overflow,
missing and invalid, all empty) and a reference of 10 000 rows; live windows
of N rows drawn from the reference's own distribution. For each N it prints
the median and 99th percentile of JS, PSI and Hellinger, and how often the
G-test p-value falls below 0.01, over 2 000 windows, at the default
smoothing (0.5) and without smoothing.

    python bench/noise_floor.py
"""

from __future__ import annotations

import numpy as np

import driftmon

REGULAR_BINS = 10
REFERENCE_ROWS = 10_000
WINDOWS = 2_000
SIZES = (100, 1_000, 10_000, 100_000)


def main() -> None:
    rng = np.random.default_rng(0)
    reference = np.zeros(REGULAR_BINS + 4)
    reference[1 : 1 + REGULAR_BINS] = REFERENCE_ROWS / REGULAR_BINS
    references = np.tile(reference, (WINDOWS, 1))
    print(
        f"{REGULAR_BINS} equal-mass bins, reference {REFERENCE_ROWS} rows, no drift, "
        f"{WINDOWS} windows per size"
    )
    print(
        "smoothing  window rows  JS median/p99        PSI median/p99      "
        "Hellinger median/p99  p<0.01"
    )
    for smoothing in (0.5, 0.0):
        for rows in SIZES:
            live = np.zeros((WINDOWS, REGULAR_BINS + 4))
            live[:, 1 : 1 + REGULAR_BINS] = rng.multinomial(
                rows, [1 / REGULAR_BINS] * REGULAR_BINS, size=WINDOWS
            )
            values = driftmon.divergences(references, live, smoothing=smoothing)
            cells = []
            for name in ("js", "psi", "hellinger"):
                median, p99 = np.percentile(values[name], [50, 99])
                cells.append(f"{median:8.5f} / {p99:8.5f}")
            significant = float(np.mean(values["p_value"] < 0.01))
            print(f"{smoothing:9.1f}  {rows:11d}  " + "  ".join(cells) + f"  {significant:6.3f}")


if __name__ == "__main__":
    main()
