"""The drill report page in a real browser: headless Chromium (Debian's package) at 900 px.

The page itself has no script; the test renders a copy with a measuring script appended, lets
Chromium lay it out in a 900 x 1400 window and reads back what the browser measured (smallest text in
the timeline, page width, legend present) with ``--dump-dom``; and it takes a screenshot, kept at
``out/drill-report-900.png`` for a person to look at. Chromium runs inside a network namespace that
holds only loopback (``unshare -n``), on a file:// URL: it cannot send a packet anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from test_drill_report import acceptance_report

from regionha.drill.report import render_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
UNSHARE = shutil.which("unshare")
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
    pytest.mark.skipif(UNSHARE is None or os.geteuid() != 0,
                       reason="needs root and unshare: Chromium runs in a loopback-only network namespace"),
]

MEASURE = """
<script>
window.addEventListener("load", () => {
  const texts = [...document.querySelectorAll("svg.timeline text")].map(t => t.getBoundingClientRect().height)
    .filter(h => h > 0);
  const metrics = {
    innerWidth: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    smallestTimelineText: Math.min(...texts),
    timelineWidth: document.querySelector("svg.timeline").getBoundingClientRect().width,
    legendKeys: document.querySelectorAll(".legend .key").length,
    cards: document.querySelectorAll(".card").length,
  };
  const out = document.createElement("pre");
  out.id = "metrics";
  out.textContent = JSON.stringify(metrics);
  document.body.appendChild(out);
});
</script>
"""


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={profile}", "--window-size=900,1400", *args]
        return subprocess.run([UNSHARE, "-n", "bash", "-c", 'ip link set lo up; exec "$@"', "-", *command],
                              capture_output=True, text=True, timeout=120, check=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_the_report_page_is_readable_at_900_px(tmp_path: Path) -> None:
    page = render_html(acceptance_report())
    measured = tmp_path / "measured.html"
    measured.write_text(page.replace("</body>", MEASURE + "</body>"), encoding="utf-8")

    dom = chromium("--virtual-time-budget=5000", "--dump-dom", measured.as_uri()).stdout

    found = re.search(r'<pre id="metrics">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    metrics = json.loads(found.group(1).replace("&quot;", '"'))
    assert metrics["innerWidth"] == 900
    assert metrics["scrollWidth"] <= metrics["innerWidth"]  # nothing wider than the window
    assert metrics["smallestTimelineText"] >= 10  # px as laid out: readable (was about 7 px)
    assert metrics["timelineWidth"] >= 800
    assert metrics["legendKeys"] >= 10 and metrics["cards"] == 5


def test_a_screenshot_of_the_page_at_900_px_is_kept(tmp_path: Path) -> None:
    report = tmp_path / "drill-report.html"
    report.write_text(render_html(acceptance_report()), encoding="utf-8")
    shot = REPO / "out" / "drill-report-900.png"
    shot.parent.mkdir(exist_ok=True)

    chromium(f"--screenshot={shot}", report.as_uri())

    header = shot.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", header[16:24]) == (900, 1400)
