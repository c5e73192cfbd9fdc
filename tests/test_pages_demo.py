"""``driftmon demo`` prints its pages' address and, for each alert that fires, the
monitor's page, which opens."""

from __future__ import annotations

import re

from harness import DaemonProcess


def test_demo_prints_the_page_of_each_alert_that_fires() -> None:
    demo = DaemonProcess(None, command=["demo"], args=["--drift-after", "0"])
    with demo:
        printed = "".join(demo.stdout)
        assert f"pages:     {demo.url}/ " in printed, printed
        found = demo.wait_log(
            r"driftmon demo: alert (\S+) firing for (\S+)/(\S+): (http://\S+/monitors/\S+)", 120
        )
        rule, stream, feature, url = found.groups()
        assert url == f"{demo.url}/monitors/{stream}/{feature}"
        page = demo.get(url.removeprefix(demo.url))
        assert page.status == 200
        text = page.body.decode()
        assert f"{stream} / {feature}" in text and f'data-rule="{rule}"' in text
        # The daemon's own log line carries the same address.
        assert re.search(rf"alert {re.escape(rule)} firing for .*see {re.escape(url)}",
                         demo.log_text())
