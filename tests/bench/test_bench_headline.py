"""`dpshm bench`'s headline (how much dpshm saves, in a few lines) and its load
warning: formatting from given rows and loads, never timings."""

from __future__ import annotations

from dpshm.bench.fanout import NEEDS_MNELSL, rows
from dpshm.bench.report import LOAD_AFTER_MAX, LOAD_BEFORE_MAX, headline, load_warning


def _case(cpu: float, p50: float, p99: float) -> dict:
    return {"cpu": cpu, "outlet_cpu": 3.0, "p50_ms": p50, "p99_ms": p99, "n_lat": 100}


def _res(mnelsl: bool = True) -> dict:
    return {
        "direct": _case(1.0, 0.3, 0.9),
        "dpshm": {1: _case(8.0, 0.5, 1.5), 8: _case(30.0, 0.6, 2.0)},
        "dpshm_copy": {1: _case(9.0, 0.5, 1.6), 8: _case(36.0, 0.7, 2.2)},
        "dareplane": {1: _case(10.0, 5.0, 9.0), 8: _case(75.0, 5.5, 12.0)},
        "mnelsl": {1: _case(12.0, 5.2, 9.5), 8: _case(90.0, 5.8, 14.0)} if mnelsl else {},
    }


def test_headline_answers_at_the_largest_n():
    rs = rows(64, 1000.0, [1, 8], _res()) + rows(256, 2000.0, [1, 8], _res())
    lines = headline(rs)
    assert 3 <= len(lines) <= 5, lines
    assert lines[0] == "How much dpshm saves on this machine, N=8 consumers of one stream:"
    assert lines[1] == (
        "  CPU, 64ch@1kHz: dpshm 30 % of one core vs 75 % for 8 original StreamWatchers "
        "(2.5x less); 90 % for 8 mne-lsl StreamLSLs (3.0x less)"
    )
    assert lines[2].startswith("  CPU, 256ch@2kHz: dpshm 30 % of one core")
    assert lines[3] == (
        "  latency p50/p99, 64ch@1kHz: dpshm 0.6/2 ms; direct LSL inlet 0.3/0.9 ms; "
        "original StreamWatchers 5.5/12 ms; mne-lsl StreamLSL 5.8/14 ms"
    )
    assert not any(line.startswith("| ") for line in lines)  # not mistaken for the table


def test_headline_says_what_was_not_measured():
    res = _res(mnelsl=False)
    res["dpshm"][8] = _case(100.0, 0.6, 2.0)  # more CPU than the baseline: said so
    lines = headline(rows(64, 1000.0, [1, 8], res))
    assert (
        "(1.3x more)" in lines[1]
        and f"8 mne-lsl StreamLSLs: not measured ({NEEDS_MNELSL})" in lines[1]
    )
    assert lines[2].endswith("original StreamWatchers 5.5/12 ms; mne-lsl StreamLSL not measured")
    none = {k: {} for k in ("dpshm", "dpshm_copy", "dareplane", "mnelsl")}
    lines = headline(rows(64, 1000.0, [4], {"direct": _case(1.0, 0.3, 0.9), **none}))
    assert "dpshm not measured (needs the dpshm supervisor" in lines[1]
    assert "dpshm not measured" in lines[2] and "direct LSL inlet 0.3/0.9 ms" in lines[2]
    assert headline([]) == []


def test_load_warning():
    assert load_warning(0.2, 1.5, 2) is None  # quiet before; the run's own load after
    assert load_warning(LOAD_BEFORE_MAX * 2, LOAD_AFTER_MAX * 2, 2) is None  # at the limits
    busy = load_warning(1.4, 1.0, 2)
    assert busy is not None and busy.startswith("WARNING: this machine was busy")
    assert "1.40 before the run, 1.00 after, on 2 cores" in busy and "run again" in busy
    assert load_warning(0.1, 2.5, 2) is not None  # the run queue outgrew the cores
    assert load_warning(0.9, 0.9, None) is not None  # cores unknown: counted as one
