"""``dpshm bench``: every row present with a figure or the documented "needs" note,
the JSON output, the plot (or the clear error without matplotlib). Never speed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from dpshm.bench import copies, loop
from dpshm.bench._common import NEEDS_ORIGINAL, Row
from dpshm.bench.fanout import NEEDS_SUPERVISOR, mnelsl_available
from dpshm.bench.report import NEEDS_PLOT, table
from dpshm.cli.main import main

NUMBER = re.compile(r"^-?\d[\d.e+-]* ")

QUICK_KEYS = {
    "ring_write", "get_window_view", "get_window_copy", "unfold_buffer",
    "get_window_vs_original", "unfold_buffer_vs_original", "watcher_unfold_vs_original",
    "watcher_add_vs_original",
    "eventloop_err/1ms", "eventloop_cpu/1ms", "eventloop_err/10ms/busy", "eventloop_cpu/10ms/busy",
    "up_roundtrip/p50", "up_roundtrip/p99",
    *(f"{kind}/64ch@1kHz/N={n}" for n in (1, 4) for kind in (
        "fanout_cpu", "fanout_cpu_total", "fanout_cpu_copy", "latency_p50", "latency_p99",
        "latency_p50_vs_original", "latency_p99_vs_original", "fanout_cpu_vs_mnelsl",
        "latency_p50_vs_mnelsl", "latency_p99_vs_mnelsl")),
}  # fmt: skip


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _table_cells(stdout: str) -> dict[tuple[str, str], list[str]]:
    """``{(figure, baseline): [figure, dpshm, baseline, baseline value, ratio, note]}``."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| figure "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[(cells[0], cells[2])] = cells
    return out


def _figure_or_needs(cell: str, note: str) -> bool:
    return bool(NUMBER.match(cell)) or note.startswith(("baseline needs", "needs"))


@pytest.mark.lsl
@pytest.mark.interop
@pytest.mark.timeout(300)
def test_quick_run_prints_every_row_and_writes_json_and_plot(tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    cmd = [sys.executable, "-m", "dpshm", "bench", "--quick", "--json", str(out_json)]
    plot = _has_matplotlib()
    if plot:
        cmd += ["--plot", str(out_png)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]

    doc = json.loads(out_json.read_text())
    assert {r["key"] for r in doc["rows"]} == QUICK_KEYS
    assert doc["machine"]["quick"] is True and doc["machine"]["cores"] >= 1
    cells = _table_cells(proc.stdout)
    assert len(cells) == len(QUICK_KEYS), proc.stdout
    for r in doc["rows"]:
        _, ours, _, base, ratio, note = cells[(r["label"], r["baseline_label"])]
        assert _figure_or_needs(ours, note), (r["key"], ours, note)
        assert _figure_or_needs(base, note), (r["key"], base, note)
        if r["needs"] is None:  # both measured: the ratio is printed and matches the JSON
            assert r["value"] is not None and r["baseline"] is not None
            assert ratio == "-" if r["ratio"] is None else float(ratio) == round(r["ratio"], 2)
        else:
            assert note == r["needs"]
    # the raw fan-out results hold every N of the quick run (the baseline always: the
    # test extra installs dareplane-utils; dpshm's unless the supervisor is missing)
    raw = doc["raw"]["64ch@1kHz"]
    assert set(raw["dareplane"]) == {"1", "4"} and raw["direct"]["n_lat"] > 0
    # dpshm's own fan-out arm runs unless the supervisor cannot (the mne-lsl rows' note
    # says only that their baseline is missing)
    fan_needs = {
        r["needs"]
        for r in doc["rows"]
        if r["key"].startswith("fanout_cpu") and "mnelsl" not in r["key"]
    }
    assert set(raw["dpshm"]) == ({"1", "4"} if fan_needs == {None} else set())
    assert set(raw["dpshm_copy"]) == set(raw["dpshm"])
    assert set(raw["mnelsl"]) == ({"1", "4"} if mnelsl_available() else set())
    # the headline comes first: how much dpshm saves at the largest N, then the table
    head = proc.stdout.split("\n| figure ")[0].splitlines()
    assert head[0] == "How much dpshm saves on this machine, N=4 consumers of one stream:"
    assert head[1].startswith("  CPU, 64ch@1kHz: dpshm ") and "4 original StreamWatchers" in head[1]
    assert head[2].startswith("  latency p50/p99, 64ch@1kHz: dpshm ")
    assert ("WARNING: this machine was busy" in proc.stdout) == bool(doc["machine"]["load_warning"])
    if plot:
        assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error_before_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    png = tmp_path / "x.png"
    assert main(["bench", "--quick", "--plot", str(png)]) == 2
    captured = capsys.readouterr()
    assert NEEDS_PLOT in captured.err and "pip install 'dpshm[plot]'" in captured.err
    assert captured.out == "" and not png.exists()


def test_rows_without_dareplane_utils_carry_the_needs_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for mod in (
        "dareplane_utils.stream_watcher.lsl_stream_watcher",
        "dareplane_utils.general.ringbuffer",
        "dareplane_utils.general.event_loop",
        "dareplane_utils.general.time",
    ):
        monkeypatch.setitem(sys.modules, mod, None)  # as if not installed
    rows = copies.measure(n_ch=4, srate=100.0, seconds=1.0, window_s=0.5, repeat=1,
                          budget_s=0.001)  # fmt: skip
    rows += loop.measure(total_s=0.3)
    needing = [r for r in rows if r.needs]
    assert {r.key for r in needing} == {
        "get_window_vs_original", "unfold_buffer_vs_original", "watcher_unfold_vs_original",
        "watcher_add_vs_original", "eventloop_err/1ms", "eventloop_cpu/1ms",
        "eventloop_err/10ms/busy", "eventloop_cpu/10ms/busy",
    }  # fmt: skip
    for r in needing:
        assert r.needs == NEEDS_ORIGINAL and r.baseline is None and r.value is not None
        assert r.ratio is None
    for r in rows:
        if not r.needs:
            assert r.value is not None and r.baseline is not None and r.ratio is not None
    text = table(rows)
    assert text.count(NEEDS_ORIGINAL) == len(needing)


def test_row_ratio_and_table_cells() -> None:
    rows = [
        Row("a", "fig a", "us", -4.0, "base", 2.0),
        Row("b", "fig b", "ms", None, "direct", 1.5, NEEDS_SUPERVISOR),
        Row("c", "fig c", "%", 1.0, "zero", 0.0),
    ]
    assert rows[0].ratio == 2.0 and rows[1].ratio is None and rows[2].ratio is None
    cells = _table_cells(table(rows))
    assert cells[("fig a", "base")][1:] == ["-4 us", "base", "2 us", "2.00", ""]
    assert cells[("fig b", "direct")][1:] == ["-", "direct", "1.5 ms", "-", NEEDS_SUPERVISOR]
    assert cells[("fig c", "zero")][4] == "-"
    assert rows[1].to_dict()["ratio"] is None
