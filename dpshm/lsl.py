"""The LSL source: resolving streams, reading them into numpy buffers, test outlets.

This is the only module of dpshm that imports :mod:`pylsl`. Everything else sees
LSL through :class:`StreamSpec` (what a stream is), :func:`resolve_streams` /
:func:`find_stream` (which streams exist), :class:`Inlet` (reading) and
:class:`Outlet` (writing; used by tests, examples and ``dpshm mock``).

Channel formats and numpy dtypes
--------------------------------
==============  =================================================
LSL format      numpy dtype of :attr:`StreamSpec.dtype`
==============  =================================================
``float32``     ``float32``
``double64``    ``float64``
``int8``        ``int8``
``int16``       ``int16``
``int32``       ``int32``
``int64``       ``int64``
``string``      ``object`` (each element a Python ``str``; ``bytes``
                with ``Inlet(..., decode_strings=False)``)
==============  =================================================

Resolve results and metadata
----------------------------
LSL's resolver only transmits a stream's header: :func:`resolve_streams` and
:func:`find_stream` return specs whose ``<desc>`` is empty, so their
``channel_names`` are the defaults ``ch_1..``. :attr:`Inlet.spec` holds the full
info (fetched from the outlet when the inlet opens), with channel labels from
``<desc><channels><channel><label>`` and the full metadata
(:meth:`StreamSpec.metadata`).

Stream loss
-----------
With ``Inlet(..., recover=False)`` a pull raises :class:`~dpshm.errors.StreamLostError`
as soon as the outlet is gone. With ``recover=True`` (the default, as in pylsl)
liblsl reconnects silently when an outlet with the same ``source_id`` comes back
(measured: ~1 s); while it is away pulls just return 0 rows. A stream without a
``source_id`` cannot be recovered and raises :class:`StreamLostError` either way.
"""

from __future__ import annotations

import ctypes
import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pylsl

from dpshm._logging import library_logger
from dpshm.errors import (
    AmbiguousStreamError,
    DpshmTimeoutError,
    StreamLostError,
    StreamNotFoundError,
)
from dpshm.formats import FORMATS

logger = library_logger(__name__)

__all__ = [
    "CHANNEL_FORMATS",
    "Inlet",
    "Outlet",
    "StreamSpec",
    "find_stream",
    "local_clock",
    "resolve_streams",
]

#: LSL channel format name -> numpy dtype (object for strings), from the one table in
#: :data:`dpshm.formats.FORMATS`.
CHANNEL_FORMATS: dict[str, np.dtype] = {
    name: np.dtype(object) if dt is None else dt for name, (_, dt) in FORMATS.items()
}

# pylsl's cf_* constants are liblsl's format codes, the ones FORMATS lists
_CF_BY_NAME = {name: code for name, (code, _) in FORMATS.items()}
_NAME_BY_CF = {v: k for k, v in _CF_BY_NAME.items()}

#: liblsl's log level while no ``lsl_api.cfg`` configures liblsl: -1 = warnings and errors.
#: Its INFO lines ("Loaded default config", its git hash) on every process start are noise.
LIBLSL_LOG_LEVEL = -1


def _liblsl_config_files() -> list[Path]:
    """The files liblsl looks for when ``$LSLAPICFG`` is unset, in its order (api_config.cpp)."""
    return [Path("lsl_api.cfg"), Path.home() / "lsl_api" / "lsl_api.cfg",
            Path("/etc/lsl_api/lsl_api.cfg")]  # fmt: skip


def _quiet_liblsl() -> bool:
    """Lower liblsl's log level to :data:`LIBLSL_LOG_LEVEL` unless the user configures it.

    A user's ``$LSLAPICFG`` or ``lsl_api.cfg`` wins. Returns True if applied.
    Takes effect only before liblsl loads its configuration (its first outlet, inlet or
    resolve in this process); later it is ignored by liblsl.
    """
    try:
        if os.environ.get("LSLAPICFG") or any(p.is_file() for p in _liblsl_config_files()):
            return False
        pylsl.set_config_content(f"[log]\nlevel = {LIBLSL_LOG_LEVEL}\n")
    except Exception as exc:  # an old liblsl without the call, an unreadable home, ...
        logger.debug("liblsl's log level left as is: %s", exc)
        return False
    return True


_quiet_liblsl()

#: Longest wait (s) of Inlet.close() for a pull running in another thread.
_CLOSE_WAIT_S = 30.0
_NO_WAIT = ctypes.c_double(0.0)  # timeout argument of a non-blocking chunk pull
#: Default wait (s) after a first match for further matches (ambiguity check).
DEFAULT_SETTLE_S = 0.2


def local_clock() -> float:
    """LSL's clock (seconds), the time base of every LSL timestamp."""
    return pylsl.local_clock()


def _default_names(n: int) -> tuple[str, ...]:
    return tuple(f"ch_{i + 1}" for i in range(n))


def _channel_labels(root: ET.Element, n_channels: int) -> tuple[str, ...]:
    """Labels from ``<desc><channels><channel><label>``, positionally.

    A missing or empty label (or a missing ``<channel>``) becomes ``ch_<i+1>``.
    """
    names = list(_default_names(n_channels))
    channels = root.find("desc/channels")
    if channels is None:
        return tuple(names)
    for i, ch in enumerate(channels.findall("channel")[:n_channels]):
        label = (ch.findtext("label") or "").strip()
        if label:
            names[i] = label
    return tuple(names)


def info_to_dict(info: pylsl.StreamInfo) -> dict[str, Any]:
    """A :class:`pylsl.StreamInfo`'s XML as a nested dict, ``{"info": {...}}``.

    Leaves are strings, repeated elements (e.g. ``channel``) lists, as
    ``xmltodict.parse(info.as_xml())`` gives (empty elements are ``""`` here).
    """
    root = ET.fromstring(info.as_xml())
    return {root.tag: _element_to_obj(root)}


def _element_to_obj(el: ET.Element) -> Any:
    """XML element -> ``str`` (leaf) or ``dict`` (repeated children become lists)."""
    children = list(el)
    if not children:
        return (el.text or "").strip()
    out: dict[str, Any] = {}
    for child in children:
        value = _element_to_obj(child)
        if child.tag in out:
            if not isinstance(out[child.tag], list):
                out[child.tag] = [out[child.tag]]
            out[child.tag].append(value)
        else:
            out[child.tag] = value
    return out


@dataclass(frozen=True)
class StreamSpec:
    """Description of one LSL stream.

    Attributes
    ----------
    name, type, source_id : str
        The stream's identity as announced by its outlet.
    n_channels : int
        Number of channels.
    srate : float
        Nominal sampling rate in Hz; ``0.0`` for irregular streams.
    channel_format : str
        LSL format name (see :data:`CHANNEL_FORMATS`).
    channel_names : tuple of str
        Labels from the ``<desc>`` metadata, ``ch_1..`` where missing.
    uid, hostname : str
        The outlet's unique id and host.
    created_at : float
        Creation time of the outlet on the LSL clock.
    xml : str
        The full stream info as LSL XML (header only for resolve results).
    """

    name: str
    type: str
    source_id: str
    n_channels: int
    srate: float
    channel_format: str
    channel_names: tuple[str, ...]
    uid: str = ""
    hostname: str = ""
    created_at: float = 0.0
    xml: str = field(default="", repr=False)
    _info: Any = field(default=None, repr=False, compare=False)

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of one value (``object`` for string streams)."""
        return CHANNEL_FORMATS[self.channel_format]

    @property
    def is_string(self) -> bool:
        """Whether this is a string (marker) stream."""
        return self.channel_format == "string"

    @property
    def info(self) -> pylsl.StreamInfo | None:
        """The :class:`pylsl.StreamInfo` this spec was built from (``None`` if none)."""
        return self._info

    @property
    def is_irregular(self) -> bool:
        """Whether the nominal rate is 0 (irregular stream)."""
        return self.srate == 0.0

    def metadata(self) -> dict[str, Any]:
        """The stream info XML as a nested dict (the ``<info>`` element).

        Leaves are strings; repeated elements (e.g. ``channel``) become lists.
        """
        if not self.xml:
            return {}
        obj = _element_to_obj(ET.fromstring(self.xml))
        return obj if isinstance(obj, dict) else {}

    def describe(self) -> str:
        """A short one-line description used in error messages."""
        return f"{self.name!r} (type {self.type!r}, source_id {self.source_id!r})"

    @classmethod
    def from_info(cls, info: pylsl.StreamInfo) -> StreamSpec:
        """Build a spec from a :class:`pylsl.StreamInfo` (keeps it for opening inlets)."""
        xml = info.as_xml()
        n = info.channel_count()
        try:
            names = _channel_labels(ET.fromstring(xml), n)
        except ET.ParseError:
            logger.debug("unparsable stream info XML of %r", info.name())
            names = _default_names(n)
        return cls(
            name=info.name(),
            type=info.type(),
            source_id=info.source_id(),
            n_channels=n,
            srate=float(info.nominal_srate()),
            channel_format=_NAME_BY_CF.get(info.channel_format(), "float32"),
            channel_names=names,
            uid=info.uid(),
            hostname=info.hostname(),
            created_at=float(info.created_at()),
            xml=xml,
            _info=info,
        )


def resolve_streams(timeout: float = 1.0) -> list[StreamSpec]:
    """Every LSL stream visible within ``timeout`` seconds (header info only).

    Parameters
    ----------
    timeout : float
        How long to listen for outlets; this call always takes that long.
    """
    return [StreamSpec.from_info(i) for i in pylsl.resolve_streams(wait_time=timeout)]


def _literal(value: str) -> str | None:
    """An XPath string literal for ``value``, or None when it cannot be quoted."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _matches(spec: StreamSpec, crit: dict[str, str]) -> bool:
    return all(getattr(spec, k) == v for k, v in crit.items())


def find_stream(
    name: str | None = None,
    type: str | None = None,
    source_id: str | None = None,
    timeout: float = 5.0,
    settle: float = DEFAULT_SETTLE_S,
) -> StreamSpec:
    """Find exactly one LSL stream matching all given fields.

    Parameters
    ----------
    name, type, source_id : str, optional
        Fields the stream must match exactly. At least one is required.
    timeout : float
        Longest wait (s) for a first match.
    settle : float
        After the first match, how long (s) to wait for a second one before
        deciding the selection is unique.

    Returns
    -------
    StreamSpec
        The matching stream (header info; open an :class:`Inlet` for labels).

    Raises
    ------
    StreamNotFoundError
        Nothing matched within ``timeout``; the message lists the visible streams.
    AmbiguousStreamError
        Several streams matched; the message lists them with their source_ids.
    """
    crit = {k: v for k, v in (("name", name), ("type", type), ("source_id", source_id)) if v}
    if not crit:
        raise ValueError(
            "find_stream() needs at least one of name, type or source_id; "
            "to list every stream use resolve_streams()"
        )
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    literals = {k: _literal(v) for k, v in crit.items()}
    if all(lit is not None for lit in literals.values()):
        pred = " and ".join(f"{k}={lit}" for k, lit in literals.items())
        found = [StreamSpec.from_info(i) for i in pylsl.resolve_bypred(pred, 1, timeout)]
        if len(found) == 1 and settle > 0:
            # a second resolve may miss the first match (short settle, loaded machine): merge
            found += [StreamSpec.from_info(i) for i in pylsl.resolve_bypred(pred, 2, settle)]
    else:  # values no XPath literal can hold: filter everything visible
        found = [s for s in resolve_streams(timeout) if _matches(s, crit)]
    found = list({s.uid: s for s in found}.values())
    wanted = ", ".join(f"{k}={v!r}" for k, v in crit.items())
    if not found:
        visible = resolve_streams(max(0.5, min(1.0, timeout)))
        listing = ", ".join(s.describe() for s in visible) or "none"
        raise StreamNotFoundError(
            f"No LSL stream with {wanted} after {timeout} s; visible streams: {listing}. "
            "Check the name/type/source_id, or start the outlet / raise the timeout."
        )
    if len(found) > 1:
        listing = ", ".join(s.describe() for s in found)
        raise AmbiguousStreamError(
            f"{len(found)} LSL streams match {wanted}: {listing}. "
            "Select one by adding its source_id (or type)."
        )
    return found[0]


def _destroy(obj: Any) -> None:
    """Free a pylsl inlet/outlet now rather than whenever it is garbage-collected.

    pylsl only frees in ``__del__``; we call it explicitly and null the handle so
    the later implicit ``__del__`` deletes a null pointer (a no-op in liblsl).
    """
    obj.__del__()
    obj.obj = None


class Inlet:
    """A connected LSL inlet that pulls straight into caller-provided numpy buffers.

    Parameters
    ----------
    spec : StreamSpec
        The stream to open (from :func:`find_stream` or :func:`resolve_streams`).
    max_buflen_s : int
        LSL-side queue length in seconds (in hundreds of samples for irregular
        streams, LSL's convention). LSL drops the oldest samples when it fills.
    max_chunklen : int
        Preferred chunk size for transmission (0 = the outlet's choice).
    recover : bool
        Let liblsl reconnect silently when the outlet comes back with the same
        ``source_id``. With ``False`` a lost outlet raises :class:`StreamLostError`.
    open_timeout : float
        Longest wait (s) for the connection and the full stream info.
    decode_strings : bool
        String streams only: deliver ``str`` (UTF-8, invalid bytes replaced) when
        True, the raw ``bytes`` when False.

    Attributes
    ----------
    spec : StreamSpec
        Full stream info, including ``<desc>`` (channel labels, metadata).
    """

    _inlet: Any = None
    closed: bool = True

    def __init__(
        self,
        spec: StreamSpec,
        max_buflen_s: int = 360,
        max_chunklen: int = 0,
        recover: bool = True,
        open_timeout: float = 5.0,
        decode_strings: bool = True,
    ) -> None:
        info = spec._info
        if info is None:
            raise ValueError(
                f"StreamSpec {spec.describe()} carries no LSL info; "
                "get it from find_stream() or resolve_streams()"
            )
        self._decode = decode_strings
        self._lock = threading.Lock()  # serialises pulls against close()
        self._inlet = pylsl.StreamInlet(
            info, max_buflen=int(max_buflen_s), max_chunklen=int(max_chunklen), recover=recover
        )
        self.closed = False
        try:
            self._inlet.open_stream(timeout=open_timeout)
            self.spec = StreamSpec.from_info(self._inlet.info(timeout=open_timeout))
        except pylsl.util.TimeoutError:
            self.close()
            raise DpshmTimeoutError(
                f"Could not open LSL stream {spec.describe()} within {open_timeout} s; "
                "is the outlet still running and reachable? Raise open_timeout if it is slow."
            ) from None
        except pylsl.util.LostError:
            self.close()
            raise self._lost_error(spec) from None
        except BaseException:
            self.close()
            raise
        self._dtype = self.spec.dtype
        self._n_channels = self.spec.n_channels
        # Direct liblsl pull (pylsl's own per-format function) when this pylsl has it.
        self._do_pull = getattr(self._inlet, "do_pull_chunk", None)
        self._direct = self._do_pull is not None and hasattr(self._inlet, "obj")
        self._errcode = ctypes.c_int()
        self._args: tuple | None = None

    @staticmethod
    def _lost_error(spec: StreamSpec) -> StreamLostError:
        return StreamLostError(
            f"LSL stream {spec.describe()} was lost: its outlet went away. "
            "Reconnect (find_stream + Inlet) once it is back; an Inlet with recover=True "
            "and a source_id reconnects by itself."
        )

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("operation on a closed Inlet; open a new one")

    def pull_into(self, data: np.ndarray, timestamps: np.ndarray, timeout: float = 0.0) -> int:
        """Pull up to ``min(len(data), len(timestamps))`` samples into the buffers.

        Parameters
        ----------
        data : np.ndarray
            C-contiguous array of shape ``(k, n_channels)`` and dtype
            :attr:`StreamSpec.dtype`; rows ``[0, n)`` are overwritten.
        timestamps : np.ndarray
            Float array of at least ``k`` entries; entries ``[0, n)`` receive the
            LSL timestamps (without time correction).
        timeout : float
            0 returns what is queued now; ``> 0`` blocks (without spinning) until
            at least one sample arrives or the timeout ends, then returns
            everything available.

        Returns
        -------
        int
            Number of samples written, ``n``.

        Raises
        ------
        StreamLostError
            The outlet is gone and the inlet cannot (or may not) recover.
        """
        with self._lock:
            return self._pull_into(data, timestamps, timeout)

    def _pull_into(self, data: np.ndarray, timestamps: np.ndarray, timeout: float) -> int:
        self._check_open()
        if data.dtype != self._dtype or data.ndim != 2 or data.shape[1] != self._n_channels:
            raise ValueError(
                f"data buffer has shape {data.shape} and dtype {data.dtype}; stream "
                f"{self.spec.name!r} needs (k, {self._n_channels}) of dtype {self._dtype}"
            )
        max_samples = min(len(data), len(timestamps))
        if max_samples == 0:
            return 0
        min_samples = 1 if timeout > 0 else None
        try:
            if self._dtype.kind != "O":
                if not data.flags.c_contiguous:
                    raise ValueError("data buffer must be C-contiguous (np.ascontiguousarray)")
                if (
                    self._direct
                    and timestamps.dtype == np.float64
                    and timestamps.flags.c_contiguous
                ):
                    return self._pull_direct(data, timestamps, max_samples, timeout)
                _, ts = self._inlet.pull_chunk(
                    timeout, max_samples, dest_obj=data, min_samples=min_samples, as_numpy=True
                )
                n = len(ts)
                timestamps[:n] = ts
                return n
            raw, ts = self._inlet.pull_chunk(
                timeout, max_samples, min_samples=min_samples, as_numpy=True
            )
        except pylsl.util.LostError:
            raise self._lost_error(self.spec) from None
        n = len(ts)
        if n:
            if self._decode:
                flat = raw.ravel()
                flat[:] = [b.decode("utf-8", "replace") for b in flat]
            data[:n] = raw
            timestamps[:n] = ts
        return n

    def _pull_direct(
        self, data: np.ndarray, timestamps: np.ndarray, max_samples: int, timeout: float
    ) -> int:
        """Liblsl's chunk pull straight into both caller buffers (no temporaries).

        With ``timeout > 0`` it first waits for one sample, then drains the rest
        without waiting (what pylsl's ``min_samples=1`` does).
        """
        inlet, nch, err = self._inlet, self._n_channels, self._errcode
        first = 1 if timeout > 0 else max_samples
        # The ctypes arguments of the first call are cached for the usual case of
        # the same buffers on every call (the cache keeps the arrays alive).
        args = self._args
        if (
            args is None
            or args[0] is not data
            or args[1] is not timestamps
            or args[2] != max_samples
            or args[3] != timeout
        ):
            args = self._args = (
                data,
                timestamps,
                max_samples,
                timeout,
                (
                    inlet.obj,
                    ctypes.c_void_p(data.ctypes.data),
                    ctypes.c_void_p(timestamps.ctypes.data),
                    ctypes.c_size_t(first * nch),
                    ctypes.c_size_t(first),
                    ctypes.c_double(timeout),
                    ctypes.byref(err),
                ),
            )
        n = self._do_pull(*args[4]) // nch
        if err.value:
            pylsl.util.handle_error(err)
        if n and first < max_samples:
            rest = max_samples - n
            c_args = args[4]
            n += (
                self._do_pull(
                    c_args[0],
                    ctypes.c_void_p(c_args[1].value + n * data.strides[0]),
                    ctypes.c_void_p(c_args[2].value + n * timestamps.strides[0]),
                    ctypes.c_size_t(rest * nch),
                    ctypes.c_size_t(rest),
                    _NO_WAIT,
                    c_args[6],
                )
                // nch
            )
            if err.value:
                pylsl.util.handle_error(err)
        return n

    def time_correction(self, timeout: float = 2.0) -> float:
        """Offset (s) to add to this stream's timestamps to map them to :func:`local_clock`.

        Raises
        ------
        DpshmTimeoutError
            The outlet did not answer within ``timeout``.
        """
        try:
            with self._lock:
                self._check_open()
                return float(self._inlet.time_correction(timeout=timeout))
        except pylsl.util.TimeoutError:
            raise DpshmTimeoutError(
                f"No time-correction answer from {self.spec.describe()} within {timeout} s; "
                "raise the timeout or check the outlet's host."
            ) from None
        except pylsl.util.LostError:
            raise self._lost_error(self.spec) from None

    def info(self, timeout: float | None = None) -> pylsl.StreamInfo:
        """The full :class:`pylsl.StreamInfo` (with ``<desc>``), as ``pylsl.StreamInlet.info``.

        Fetched once when the inlet opened, so this never blocks; ``timeout`` is
        accepted for compatibility and ignored. Dareplane modules call
        ``sw.inlet.info().nominal_srate()``.
        """
        self._check_open()
        return self.spec.info

    def samples_available(self) -> int:
        """Number of samples queued for immediate pickup (may be 1/0 only)."""
        with self._lock:
            self._check_open()
            return int(self._inlet.samples_available())

    def flush(self) -> int:
        """Drop every queued sample; return how many were dropped."""
        with self._lock:
            self._check_open()
            return int(self._inlet.flush())

    def close(self) -> None:
        """Disconnect and free the inlet (idempotent).

        Safe to call from another thread: it waits for a pull in progress (at most
        that pull's timeout) before freeing liblsl's object.
        """
        if self._inlet is None:
            self.closed = True
            return
        if not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            logger.warning(
                "Inlet of %s: a pull is still running after %s s; not freeing it",
                self.spec.describe(),
                _CLOSE_WAIT_S,
            )
            self.closed = True
            return
        try:
            inlet, self._inlet = self._inlet, None
            self._args = None
            self.closed = True
            if inlet is not None:
                try:
                    inlet.close_stream()
                finally:
                    _destroy(inlet)
        finally:
            self._lock.release()

    def __enter__(self) -> Inlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Inlet {self.spec.describe() if hasattr(self, 'spec') else '?'} {state}>"


class Outlet:
    """An LSL outlet (for tests, examples and ``dpshm mock``).

    Parameters
    ----------
    name, type : str
        Stream name and content type.
    n_channels : int
        Number of channels.
    srate : float
        Nominal rate in Hz; 0 for an irregular stream.
    channel_format : str
        One of :data:`CHANNEL_FORMATS`.
    source_id : str
        Unique source id; lets inlets recover after a restart. Use one.
    channel_names : sequence of str, optional
        Written to ``<desc><channels><channel><label>``.
    chunk_size : int
        Preferred transmission chunk size (0 = per push).
    max_buffered : int
        Outlet-side buffer in seconds (LSL's ``max_buffered``).
    desc : mapping, optional
        Further ``<desc>`` elements: ``{element: {child: value}}`` becomes
        ``<element><child>value</child>...</element>`` (e.g. dpshm marks the
        mirror of a published stream this way).
    """

    _outlet: Any = None
    closed: bool = True

    def __init__(
        self,
        name: str,
        type: str = "",
        n_channels: int = 1,
        srate: float = 0.0,
        channel_format: str = "float32",
        source_id: str = "",
        channel_names: Sequence[str] | None = None,
        chunk_size: int = 0,
        max_buffered: int = 360,
        desc: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if channel_format not in _CF_BY_NAME:
            raise ValueError(
                f"unknown channel_format {channel_format!r}; use one of {sorted(_CF_BY_NAME)}"
            )
        if int(n_channels) < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels!r}")
        if srate < 0:
            raise ValueError(f"srate must be >= 0 (0 = irregular), got {srate!r}")
        info = pylsl.StreamInfo(
            name, type, int(n_channels), float(srate), _CF_BY_NAME[channel_format], source_id
        )
        if channel_names is not None:
            if len(channel_names) != n_channels:
                raise ValueError(
                    f"{len(channel_names)} channel_names for {n_channels} channels; "
                    "give one label per channel"
                )
            chans = info.desc().append_child("channels")
            for label in channel_names:
                chans.append_child("channel").append_child_value("label", str(label))
        for element, children in (desc or {}).items():
            node = info.desc().append_child(str(element))
            for child, value in children.items():
                node.append_child_value(str(child), str(value))
        self._dtype = CHANNEL_FORMATS[channel_format]
        self._outlet = pylsl.StreamOutlet(info, int(chunk_size), int(max_buffered))
        self.closed = False
        self.spec = StreamSpec.from_info(self._outlet.get_info())

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("operation on a closed Outlet")

    def push_chunk(self, data: Any, timestamp: float | Sequence[float] = 0.0) -> None:
        """Push a chunk of shape ``(n, n_channels)``.

        ``timestamp``: of the last sample (LSL derives the others from the
        nominal rate; 0.0 = now), or a sequence of ``n``, one per sample.
        """
        self._check_open()
        if self._dtype.kind != "O":
            data = np.ascontiguousarray(data, dtype=self._dtype)
            if data.ndim == 1:
                data = data.reshape(-1, self.spec.n_channels)
        else:
            data = [[str(v) for v in row] for row in data]
        self._outlet.push_chunk(data, timestamp)

    def push_sample(self, sample: Any, timestamp: float = 0.0) -> None:
        """Push one sample (one value per channel)."""
        self._check_open()
        if self._dtype.kind == "O":
            sample = [str(v) for v in sample]
        self._outlet.push_sample(sample, timestamp)

    def have_consumers(self) -> bool:
        """Whether at least one inlet is connected."""
        self._check_open()
        return bool(self._outlet.have_consumers())

    def wait_for_consumers(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a consumer; return whether one came."""
        self._check_open()
        return bool(self._outlet.wait_for_consumers(timeout))

    def close(self) -> None:
        """Destroy the outlet: it disappears from the network (idempotent)."""
        outlet, self._outlet = self._outlet, None
        self.closed = True
        if outlet is not None:
            _destroy(outlet)

    def __enter__(self) -> Outlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
