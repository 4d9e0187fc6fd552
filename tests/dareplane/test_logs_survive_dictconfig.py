"""dpshm's logging survives dareplane-utils' ``dictConfig`` (issue: erp-classifier).

A module that keeps ``dareplane_utils.signal_processing.FilterBank`` imports
dareplane-utils' logging setup after dpshm; its ``dictConfig`` disables every
logger that exists then. dpshm's loggers, and those from ``dpshm.get_logger``,
stay enabled: an ``EventLoop`` callback's exception is still reported, and the
module's own dpshm logger still forwards. Runs in a subprocess (the import's
effect is process-wide).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, wait_until
from log_util import serving_receiver

pytest.importorskip("dareplane_utils")
pytestmark = pytest.mark.interop

MODULE = r"""
import logging, sys, threading
log_port = int(sys.argv[1])
import dpshm.dareplane.logs
dpshm.dareplane.logs.DEFAULT_LOG_PORT = log_port
from dpshm import EventLoop, get_logger, RingBuffer, StreamWatcher  # erp-classifier's names
logger = get_logger("erp_module")  # the module's logger, created before the import below
logger.setLevel("INFO")
mine = logging.getLogger("plain.module")  # a plain logger: disabled, as with the original
from dareplane_utils.signal_processing.filtering import FilterBank  # runs dictConfig
assert logging.getLogger().handlers, "dareplane-utils did not configure logging"
assert mine.disabled
assert not logger.disabled and not logging.getLogger("dpshm.dareplane.eventloop").disabled

def classification_callback(ctx):
    return np.zeros(3)  # erp-classifier's main.py uses np without importing it

loop = EventLoop(0.01, ctx=None)
loop.add_callback(classification_callback)
loop.add_callback_once(lambda ctx: logger.info("module %s started", "erp"))
th = loop.start()
while loop.callback_errors < 3:
    threading.Event().wait(0.01)
loop.stop(5)
logging.getLogger("dpshm.dareplane.eventloop").handlers  # noqa
dpshm.dareplane.logs._shared_handlers()[0].flush(5)
"""


def test_eventloop_error_and_module_log_survive_dareplane_import(tmp_path: Path) -> None:
    with serving_receiver(tmp_path / "r.log") as (rcv, got):
        proc = subprocess.run(
            [sys.executable, "-c", MODULE, str(rcv.port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        wait_until(lambda: any(r.getMessage() == "module erp started" for r in got), 10)
    # dareplane-utils' root console handler printed dpshm's report of the failing callback
    assert "classification_callback raised NameError" in proc.stderr, proc.stderr[-3000:]
    assert "name 'np' is not defined" in proc.stderr


def test_explicit_disable_still_works() -> None:
    import logging

    from dpshm._logging import library_logger

    lg = library_logger("dpshm.test.explicit")
    lg.disabled = True  # user code may still silence a dpshm logger on purpose
    try:
        assert lg.disabled and not lg.isEnabledFor(logging.CRITICAL)
    finally:
        lg.disabled = False
