"""dpshm's own loggers.

They survive ``logging.config`` and their records are safe for every Dareplane log
receiver.

Two problems of running next to dareplane-utils, solved here once for every
dpshm module (each module takes its logger from :func:`library_logger`):

* dareplane-utils' ``get_logger`` (run on import by its ``RingBuffer``,
  ``StreamWatcher``, ``FilterBank``, ``DefaultServer``) calls
  ``logging.config.dictConfig`` with ``disable_existing_loggers`` left at True,
  which sets ``disabled = True`` on every logger created before it. dpshm's
  loggers ignore a ``disabled = True`` that comes from ``logging.config`` (an
  explicit ``logger.disabled = True`` in user code still works).
* The original log receiver (``dareplane_utils.logging.server``, 0.0.21-0.0.24)
  runs ``msg % args`` with ``args`` as a *list* whenever ``"%s"`` is in ``msg``:
  any record with two or more ``%``-args crashes its connection handler
  (``TypeError: not enough arguments for format string``), one arg is shown as
  ``[value]``. :func:`make_wire_safe` turns a record logged by dpshm's code into
  one that every handler and receiver shows as the intended text (see there);
  the filter :data:`WIRE_SAFE` applies it to records from dpshm's own files
  only, so it can also sit on a module's logger handed to dpshm.

Nothing here runs on import beyond defining these objects.
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = [
    "ESCAPED_ATTR",
    "WIRE_SAFE",
    "called_from_logging_config",
    "library_logger",
    "make_wire_safe",
    "sturdy",
]

#: Record attribute (and JSON key on the wire) set when ``msg`` is the final
#: text with every ``%`` doubled and ``args`` is empty: the original receiver's
#: ``msg % []`` then yields the text; dpshm's receiver undoes the doubling.
ESCAPED_ATTR = "dpshm_escaped"
_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_FORMATTER = logging.Formatter()


def called_from_logging_config(depth: int = 4) -> bool:
    """Whether one of the ``depth`` callers of the caller is in ``logging.config``.

    ``dictConfig`` / ``fileConfig`` disable existing loggers and close every
    existing handler (through ``logging.shutdown``); dpshm's loggers and its
    socket handler use this to ignore that when another library configures
    logging.
    """
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_globals.get("__name__") == "logging.config":
            return True
        frame = frame.f_back
    return False


class _SturdyLogger(logging.Logger):
    """A Logger whose ``disabled`` flag ``logging.config`` cannot set."""

    @property  # type: ignore[override]
    def disabled(self) -> bool:
        return self.__dict__.get("_dpshm_disabled", False)

    @disabled.setter
    def disabled(self, value: bool) -> None:
        if value and called_from_logging_config(1):
            return  # disable_existing_loggers: would silence dpshm's errors
        self.__dict__["_dpshm_disabled"] = bool(value)


def sturdy(logger: logging.Logger) -> logging.Logger:
    """Make ``logger`` immune to ``disable_existing_loggers`` (and enable it).

    Only a plain :class:`logging.Logger` is changed (its class becomes a
    subclass that ignores ``disabled = True`` set by ``logging.config``);
    loggers of other classes are returned as they are.
    """
    if type(logger) is logging.Logger:
        logger.__dict__.pop("disabled", None)
        logger.__class__ = _SturdyLogger
    if isinstance(logger, _SturdyLogger):
        logger.__dict__["_dpshm_disabled"] = False
    return logger


def make_wire_safe(record: logging.LogRecord) -> None:
    """Rewrite ``record`` in place so that it reads as its text everywhere.

    ``getMessage()`` keeps returning the same text for every handler. The
    record becomes one of:

    * ``msg`` = the text, ``args = ()``: when the text has no ``"%s"``;
    * ``msg = "%(text)s"``, ``args = {"text": text}``: the text has ``"%s"``
      (the original receiver only pre-formats when ``"%s"`` is in ``msg``, and
      formats a mapping correctly);
    * ``msg`` = the text with ``%`` doubled, ``args = ()``, attribute
      :data:`ESCAPED_ATTR` set: the text has ``"%s"`` and the record carries
      ``exc_info`` (the original handler then stringifies ``args``, which only
      an empty tuple survives). Local handlers show the doubled ``%`` then.

    A record with ``exc_info`` also gets its traceback rendered into
    ``exc_text`` now. A record whose ``msg % args`` fails is left alone
    (``logging`` reports the bad call as usual).
    """
    if record.__dict__.get(ESCAPED_ATTR) or record.__dict__.get("_dpshm_safe"):
        return
    if record.exc_info:
        # the original handler sends a record with exc_info as str() of every
        # field: only a traceback already rendered as text survives that
        if not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.stack_info is None:
            record.stack_info = ""  # not "None" in the original receiver's log
    msg, args = record.msg, record.args
    if not args and isinstance(msg, str) and "%s" not in msg:
        record._dpshm_safe = True  # type: ignore[attr-defined]
        return
    try:
        text = record.getMessage()
    except Exception:
        return
    if "%s" not in text:
        record.msg, record.args = text, ()
    elif record.exc_info:
        record.msg, record.args = text.replace("%", "%%"), ()
        setattr(record, ESCAPED_ATTR, True)
    else:
        record.msg, record.args = "%(text)s", {"text": text}
    record._dpshm_safe = True  # type: ignore[attr-defined]


class _WireSafeFilter(logging.Filter):
    """Apply :func:`make_wire_safe` to records logged from dpshm's own files."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.pathname).startswith(_PKG_DIR):
            make_wire_safe(record)
        return True


#: The filter dpshm puts on its loggers and on a module's logger it is given.
WIRE_SAFE = _WireSafeFilter("")


def library_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, sturdy (see :func:`sturdy`) and wire-safe.

    Every dpshm module takes its logger from here instead of
    ``logging.getLogger(__name__)``. No handler is added, no level set.
    """
    logger = sturdy(logging.getLogger(name))
    if WIRE_SAFE not in logger.filters:
        logger.addFilter(WIRE_SAFE)
    return logger
