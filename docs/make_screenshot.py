"""Regenerate docs/monitor-page.png: a drifted monitor's page of ``driftmon demo``.

Starts the demo (drift after 40 s), waits until ``shop/basket_value`` has fired
for a while, and has headless Chromium photograph its page. Run from the
repository root with the test dependencies installed::

    python docs/make_screenshot.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import Browser  # noqa: E402
from tests.harness import DaemonProcess  # noqa: E402


async def photograph(url: str, path: Path) -> None:
    async with Browser() as browser:
        await browser.open(url, width=1100, height=1560)
        await browser.screenshot(path, full_page=False)


def main() -> int:
    with DaemonProcess(None, command=["demo"], args=["--drift-after", "40"]) as demo:
        demo.wait_log(r"alert \S+ firing for shop/basket_value", 180)
        time.sleep(45)  # let the history show the drift and what came before it
        asyncio.run(photograph(demo.url + "/monitors/shop/basket_value",
                               ROOT / "docs" / "monitor-page.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
