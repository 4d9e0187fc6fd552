"""The suite's logging isolation (conftest.py + helpers.preserved_logging).

Importing dareplane-utils runs ``dictConfig`` (disables existing loggers, adds
root handlers incl. a socket handler to port 9020). The tests below run in file
order: the first misconfigures logging the way that import does, the second
checks that nothing of it reached the next test.
"""

from __future__ import annotations

import logging
import logging.config
import logging.handlers

import pytest
from helpers import import_original

import dpshm.shm.ring  # noqa: F401  (creates the 'dpshm.shm.ring' logger)

# a plain logger that exists before the reconfiguration (dpshm's own cannot be
# disabled by it: tests/dareplane/test_logs_survive_dictconfig.py)
PROBE = logging.getLogger("t.isolation.probe")


def _socket_handlers() -> list[logging.Handler]:
    return [
        h for h in logging.getLogger().handlers if isinstance(h, logging.handlers.SocketHandler)
    ]


def test_a_test_that_reconfigures_logging() -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "handlers": {
                "socket": {
                    "class": "logging.handlers.SocketHandler",
                    "host": "127.0.0.1",
                    "port": 9,
                }
            },
            "root": {"handlers": ["socket"], "level": "CRITICAL"},
        }
    )
    assert PROBE.disabled
    assert not logging.getLogger("dpshm.shm.ring").disabled
    assert _socket_handlers()


def test_does_not_affect_the_next_test(caplog: pytest.LogCaptureFixture) -> None:
    assert not PROBE.disabled
    assert not _socket_handlers()
    assert logging.getLogger().level == logging.WARNING
    with caplog.at_level(logging.WARNING, logger="dpshm.shm.ring"):
        logging.getLogger("dpshm.shm.ring").warning("still captured")
    assert [r.getMessage() for r in caplog.records] == ["still captured"]


def test_importing_the_original_configures_nothing() -> None:
    pytest.importorskip("dareplane_utils")
    for mod in (
        "dareplane_utils.general.ringbuffer",
        "dareplane_utils.stream_watcher.lsl_stream_watcher",
        "dareplane_utils.default_server.server",
    ):
        import_original(mod)
    assert not _socket_handlers()
    assert not PROBE.disabled
