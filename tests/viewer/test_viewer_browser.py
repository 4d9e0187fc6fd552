"""The page in a real headless Chromium against `dpshm mock` + `dpshm up` + `dpshm view`,
each its own process: the table lists the mock streams, the trace scrolls, markers show,
and a stopped outlet shows as stale. Screenshots are kept in the test's tmp_path."""

from __future__ import annotations

import numpy as np
import pytest
from cdp import CHROMIUM, INSTALL_HINT, Chromium
from viewer_util import get, start, supervise, url_of

from dpshm.viewer.columns import unpack_window

pytestmark = [
    pytest.mark.lsl,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason=f"no chromium on PATH: {INSTALL_HINT}"),
]

ROW = "document.querySelector('#streams tbody tr[data-name=\"{}\"]')"
TRACE = "document.getElementById('trace')"
# watched in the page for up to 1 s: two drawings of one newest column, at two positions
SCROLLS_BETWEEN_FRAMES = f"""new Promise((resolve) => {{
  const c = {TRACE}, seen = {{}};
  let n = 0;
  const id = setInterval(() => {{
    const ends = (seen[c.dataset.endCol] = seen[c.dataset.endCol] || new Set());
    ends.add(c.dataset.displayEnd);
    if (ends.size >= 2 || ++n > 60) {{ clearInterval(id); resolve(ends.size >= 2); }}
  }}, 15);
}})"""
# the Page Visibility API as a hidden (or shown) tab reports it
HIDE = (
    "Object.defineProperty(document, 'hidden', {{configurable: true, get: () => {0}}}); "
    "document.dispatchEvent(new Event('visibilitychange'))"
)
# the page's columns of the window (view.t: see viewer.js), with what it asked for
STORE = """(() => {
  const t = view.t, cols = {};
  for (let c = t.end - t.W; c < t.end; c++) {
    const i = ((c % t.S) + t.S) % t.S;
    cols[c] = Array.from(t.mm.subarray(i * t.m * 2, (i + 1) * t.m * 2));
  }
  return {key: view.key, seconds: document.getElementById("win").value, width: t.width,
          end: t.end, cols};
})()"""


def test_page_lists_streams_scrolls_traces_and_shows_stale(procs, tmp_path):
    ns = procs[0]
    sig, mk = f"{ns}_eeg", f"{ns}_mk"
    mock = start(procs, "mock", "--name", sig, "--marker-name", mk, "--channels", "8",
                 "--rate", "250")  # fmt: skip
    mock.saw("Ctrl-C stops")
    supervise(procs, sig, mk)
    url = url_of(start(procs, "view", "--port", "0", "--no-browser"))
    with Chromium(tmp_path / "profile") as browser:
        browser.open(url)
        # the table lists both mock streams, with their figures
        browser.wait_for(f"!!({ROW.format(sig)} && {ROW.format(mk)})", timeout=30)
        cells = browser.eval(f"[...{ROW.format(sig)}.cells].map(c => c.textContent)")
        assert cells[:4] == [sig, "EEG", cells[2], "8"] and cells[4] == "250"
        assert cells[9] == "live"
        assert browser.eval("document.getElementById('supervisor').textContent").startswith(
            "supervisor pid"
        )
        # a click shows the traces, and they scroll
        browser.eval(f"{ROW.format(sig)}.click()")
        end1 = int(
            browser.wait_for(f"Number({TRACE}.dataset.frames) > 0 && {TRACE}.dataset.endCol")
        )
        browser.eval(f"window.img1 = {TRACE}.toDataURL(); true")
        browser.wait_for(f"Number({TRACE}.dataset.endCol) > {end1 + 50}", timeout=15)
        # the drawing follows the data (polled: a frame may land between two paints)
        browser.wait_for(f"{TRACE}.toDataURL() !== window.img1", timeout=10)
        # between two frames of data the display keeps scrolling (two drawings of the
        # same newest column at different positions)
        browser.wait_for(SCROLLS_BETWEEN_FRAMES, timeout=15)
        # the columns the page assembled from the frames are those of one full decimation
        store = browser.eval(STORE)
        q = f"key={store['key']}&seconds={store['seconds']}&width={store['width']}&nch=8"
        h, _, mm = unpack_window(get(int(url.split(":")[2].split("/")[0]), f"/api/window?{q}")[2])
        both = range(max(h["first_col"], store["end"] - h["window_cols"]), store["end"])
        assert len(both) > 40, (h, store["end"])  # all the page holds but the newest
        for c in both:
            page = np.array(store["cols"][str(c)], dtype=float)  # NaN arrives as None
            np.testing.assert_array_equal(page, mm[c - h["first_col"]].ravel().astype(float))
        ch_range = browser.eval("document.getElementById('ch-range').textContent")
        assert ch_range == "1\u20138 of 8"  # en dash
        # the mock's markers (one a second) are drawn as lines on the trace
        browser.wait_for(f"Number({TRACE}.dataset.markers) > 0", timeout=15)
        shot = browser.screenshot(tmp_path / "viewer.png")
        print(f"screenshot of the page: {shot}")
        # a hidden tab closes both event streams (the viewer then sends nothing); shown
        # again, the page reconnects and the trace goes on
        browser.eval(HIDE.format("true"))
        assert browser.eval("view.trace === null && view.events === null")
        assert browser.eval("document.getElementById('connection').textContent").startswith(
            "paused"
        )
        end2 = int(browser.eval(f"{TRACE}.dataset.endCol"))
        browser.eval(HIDE.format("false"))
        browser.wait_for("document.getElementById('connection').textContent === 'live'")
        browser.wait_for(f"Number({TRACE}.dataset.endCol) > {end2 + 50}", timeout=15)
        # another window length: the viewer decimates anew
        browser.eval("const w = document.getElementById('win'); w.value = '2'; "
                     "w.dispatchEvent(new Event('change'))")  # fmt: skip
        browser.wait_for("document.getElementById('trace-info').textContent"
                         ".includes('2.0 s')")  # fmt: skip
        # the marker stream: its newest markers as a list
        browser.eval(f"{ROW.format(mk)}.click()")
        browser.wait_for("Number(document.getElementById('markers').dataset.count) > 0")
        rows = "[...document.querySelectorAll('#markers tbody tr')]"
        labels = browser.eval(f"{rows}.map(r => r.cells[1].textContent)")
        assert set(labels) <= {"trial_start", "stimulus", "response"} and labels
        browser.eval(f"{ROW.format(sig)}.click()")
        # the outlet stops: the page shows the stream stale
        assert mock.stop() == 0
        browser.wait_for(f"{ROW.format(sig)}.dataset.stale === '1'", timeout=30)
        assert browser.eval(f"{ROW.format(sig)}.cells[9].textContent") == "STALE"
        assert "STALE" in browser.eval("document.getElementById('trace-title').textContent")
        # the trace stream says so too (a frame without new columns)
        browser.wait_for("document.getElementById('trace-info').textContent.includes('STALE')")
        shot = browser.screenshot(tmp_path / "viewer-stale.png")
        print(f"screenshot with the outlet stopped: {shot}")


def test_token_page_flow(procs, tmp_path):
    """With a token, the printed URL opens the page once; the cookie carries on."""
    url = url_of(start(procs, "view", "--port", "0", "--no-browser", "--token", "generate"))
    assert "?token=" in url
    with Chromium(tmp_path / "profile") as browser:
        browser.open(url.split("?")[0])  # without the token: refused
        assert "needs its token" in browser.eval("document.body.textContent")
        browser.open(url)
        assert browser.eval("location.search") == ""  # the token left the address bar
        browser.wait_for("document.getElementById('connection').textContent === 'live'")
        browser.wait_for("document.getElementById('supervisor').textContent === 'no supervisor'")
        assert "no dpshm supervisor runs" in browser.eval(
            "document.getElementById('problem').textContent"
        )
