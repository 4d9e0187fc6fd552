"""Every name a Dareplane module imports from dareplane-utils has a dpshm import.

The inventory (docs/migration.md, "Every name a module imports") was built from
the ``dareplane_utils`` imports of dp-strawman-module, dp-echo,
dp-mockup-streamer, dp-passthrough, dp-threshold-controller,
dp-bollinger-control, dp-lsl-recording, dp-copydraw, dp-cortec-bic,
dp-multiband-regression, dp-erp-classifier and thijor/dp-cvep-decoder.
"""

from __future__ import annotations

import importlib
import re

import pytest
from helpers import ROOT, import_original

import dpshm

# (dareplane-utils module, name) -> the dpshm import that replaces it
INVENTORY = {
    ("dareplane_utils.default_server.server", "DefaultServer"): "dpshm",
    ("dareplane_utils.default_server.server", "threading"): "dpshm.dareplane.server",
    ("dareplane_utils.general.event_loop", "EventLoop"): "dpshm",
    ("dareplane_utils.general.ringbuffer", "RingBuffer"): "dpshm",
    ("dareplane_utils.general.time", "sleep_s"): "dpshm",
    ("dareplane_utils.logging.logger", "get_logger"): "dpshm",
    ("dareplane_utils.signal_processing.filtering", "FilterBank"): "dpshm",
    ("dareplane_utils.stream_watcher.lsl_stream_watcher", "StreamWatcher"): "dpshm",
    ("dareplane_utils.stream_watcher.lsl_stream_watcher", "pylsl_xmlelement_to_dict"): "dpshm",
}


@pytest.mark.parametrize(("origin", "name"), sorted(INVENTORY))
def test_every_inventory_name_imports_from_dpshm(origin: str, name: str) -> None:
    target = INVENTORY[(origin, name)]
    value = getattr(importlib.import_module(target), name)
    if target == "dpshm":
        assert name in dpshm.__all__ and name in dir(dpshm)
        namespace: dict[str, object] = {}
        exec(f"from dpshm import {name}", namespace)  # the form a migrated module uses
        assert namespace[name] is value
    if name == "threading":
        import threading

        assert value is threading  # the original re-exports the stdlib module too


def test_migration_guide_has_one_row_per_name() -> None:
    text = (ROOT / "docs" / "migration.md").read_text()
    section = text.split("## Every name a module imports", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `")]
    names = [re.match(r"\| `([^`]+)`", ln).group(1) for ln in rows]
    assert sorted(names) == sorted(n for _, n in INVENTORY)


def test_pylsl_xmlelement_to_dict_reads_as_the_original() -> None:
    pylsl = pytest.importorskip("pylsl")
    pytest.importorskip("dareplane_utils")
    original = import_original("dareplane_utils.stream_watcher.lsl_stream_watcher")
    info = pylsl.StreamInfo("names-test", "EEG", 3, 512.0, pylsl.cf_float32, "names-src")
    chans = info.desc().append_child("channels")
    for label in ("Fz", "Cz", "Pz"):
        chans.append_child("channel").append_child_value("label", label)
    ours, theirs = dpshm.pylsl_xmlelement_to_dict(info), original.pylsl_xmlelement_to_dict(info)

    def norm(v: object) -> object:  # xmltodict gives None for an empty element, dpshm ""
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return "" if v is None else v

    assert norm(ours) == norm(theirs)
    # how dp-passthrough and dp-threshold-controller use it
    assert float(ours["info"]["nominal_srate"]) == 512.0
