"""The filter worker that ships with dpshm: shared stream in, filtered stream out.

It reads one shared stream, applies a band-pass and/or notch filter (second-order
sections, :func:`scipy.signal.sosfilt`, the filter state carried from chunk to
chunk so the output equals the filter run once over the whole signal) and
publishes the result as a new stream (:func:`dpshm.publish_stream`), chunk by
chunk, with the input's timestamps. Readers open the output by name like any
shared stream, with the same wake-ups and loss counts.

Needs scipy: ``pip install 'dpshm[filters]'``.

Declare it in the supervisor's configuration and start it over TCP::

    [workers.bandpass]
    target = "dpshm.control.filter_worker:run"
    mode = "process"
    kwargs = { out = "eeg_bp", band = [1.0, 40.0], notch = 50.0, order = 4 }

    START_WORKER|{"worker": "bandpass", "streams": ["eeg"]}

``kwargs``: ``out`` (output name, default ``<input>_filtered``), ``band``
(``[low, high]`` Hz; ``low = 0`` low-pass, ``high = 0`` high-pass), ``notch``
(Hz; its quality factor ``notch_q``, default 30), ``order`` (Butterworth order,
default 4), ``lsl`` (also offer the output as an LSL outlet), ``stream`` (the
input when ``START_WORKER`` names no stream).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dpshm._logging import library_logger
from dpshm.errors import ConfigError

log = library_logger(__name__)

WAIT_S = 0.5  # longest block in one wait: bounds the reaction to the stop event


def _signal() -> Any:
    """``scipy.signal``, through dpshm's one entry point of scipy.

    Raises :class:`~dpshm.errors.MissingDependencyError` (naming
    ``pip install 'dpshm[filters]'``) when scipy is not installed.
    """
    from dpshm.dareplane.filterbank import scipy_signal

    return scipy_signal


def design(
    srate: float,
    band: Sequence[float] | None = None,
    notch: float | None = None,
    order: int = 4,
    notch_q: float = 30.0,
) -> np.ndarray:
    """Second-order sections of a Butterworth band-pass (or low/high-pass) and a notch.

    Parameters
    ----------
    srate : float
        Sampling rate of the input (Hz, > 0).
    band : (low, high), optional
        Pass band in Hz; ``low = 0`` makes a low-pass, ``high = 0`` a high-pass.
    notch : float, optional
        Frequency (Hz) of an IIR notch (e.g. 50 or 60 Hz line noise).
    order : int
        Butterworth order.
    notch_q : float
        Quality factor of the notch.

    Raises
    ------
    ConfigError
        An irregular input, no filter asked for, or frequencies outside (0, srate/2).
    """
    sig = _signal()
    if not srate > 0:
        raise ConfigError("the filter worker needs a regular stream (srate > 0); got srate 0")
    nyq = srate / 2.0
    sections = []
    if band is not None:
        low, high = (float(f) for f in band)
        if not (0 <= low < nyq and 0 <= high < nyq and (high == 0 or low < high)):
            raise ConfigError(
                f"band {list(band)} Hz does not fit a stream at {srate:g} Hz: use "
                f"0 <= low < high < {nyq:g} (low = 0: low-pass, high = 0: high-pass)"
            )
        if low > 0 and high > 0:
            sections.append(sig.butter(order, [low, high], "bandpass", fs=srate, output="sos"))
        elif high > 0:
            sections.append(sig.butter(order, high, "lowpass", fs=srate, output="sos"))
        elif low > 0:
            sections.append(sig.butter(order, low, "highpass", fs=srate, output="sos"))
    if notch is not None:
        if not 0 < float(notch) < nyq:
            raise ConfigError(f"notch {notch} Hz must lie in (0, {nyq:g}) for {srate:g} Hz")
        b, a = sig.iirnotch(float(notch), float(notch_q), fs=srate)
        sections.append(sig.tf2sos(b, a))
    if not sections:
        raise ConfigError("the filter worker has nothing to do: give band=[low, high] or notch")
    return np.concatenate(sections, axis=0)


class LiveFilter:
    """Filter chunk by chunk, the state carried between chunks (zero initial state).

    Feeding a signal in chunks gives the same output as
    ``scipy.signal.sosfilt(sos, signal, axis=0)`` over the whole signal.

    Parameters
    ----------
    sos : np.ndarray, shape (n_sections, 6)
    n_channels : int
    """

    def __init__(self, sos: np.ndarray, n_channels: int):
        self._sosfilt = _signal().sosfilt
        self.sos = np.asarray(sos, dtype=np.float64)
        self.n_channels = int(n_channels)
        self.zi = np.zeros((self.sos.shape[0], 2, self.n_channels))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Filter one chunk ``(k, n_channels)``; returns float64 ``(k, n_channels)``."""
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise ValueError(
                f"the filter was made for {self.n_channels} channels; got a chunk of shape "
                f"{x.shape}"
            )
        y, self.zi = self._sosfilt(self.sos, x, axis=0, zi=self.zi)
        return y


def filter_stream(
    view: Any,
    out: str,
    stop_event: threading.Event,
    *,
    band: Sequence[float] | None = None,
    notch: float | None = None,
    order: int = 4,
    notch_q: float = 30.0,
    lsl: bool = False,
    publish: Callable[..., Any] | None = None,
    namespace: str | None = None,
    logger: logging.Logger | None = None,
) -> int:
    """Filter ``view``'s stream into the published stream ``out`` until ``stop_event``.

    Every sample that arrives after the call is filtered once, in order, with
    its timestamp; samples lost by the reader (it fell ``capacity`` behind) are
    logged and the filter continues on what follows. Returns the number of
    samples published.

    Parameters
    ----------
    view : SharedStreamView
        The input (regular, numeric).
    out : str
        Name of the output stream (float32, same channels, rate and labels).
    stop_event : threading.Event
        Set to stop; checked at least every :data:`WAIT_S`.
    band, notch, order, notch_q
        See :func:`design`.
    lsl : bool
        Also offer the output as an LSL outlet.
    publish : callable, optional
        :func:`dpshm.publish_stream` or a worker's ``ctx.publish_stream``.
    namespace : str, optional
        The supervisor's namespace (with the default ``publish``).
    """
    logger = logger or log
    sos = design(view.srate, band, notch, order, notch_q)
    filt = LiveFilter(sos, view.n_channels)
    if publish is None:
        from dpshm.shm.publish import publish_stream as publish
    what = f"band {list(band)} Hz" if band is not None else ""
    what += f"{', ' if what else ''}notch {notch} Hz" if notch is not None else ""
    pub = publish(
        out,
        view.n_channels,
        view.srate,
        "float32",
        channel_names=list(view.channel_names),
        type=str(view.meta.get("lsl", {}).get("type", "")) or "Filtered",
        lsl=lsl,
        **({"namespace": namespace} if namespace is not None else {}),
        meta={"filter": {"input": view.name, "sos": sos.tolist(), "what": what}},
    )
    n = 0
    try:
        logger.info("filtering %r (%s) into %r", view.name, what, out)
        while not stop_event.is_set():
            if not view.wait(WAIT_S):
                continue
            data, ts, lost = view.read_new()
            if lost:
                logger.warning("filter %r: %d input samples lost (reader too slow)", out, lost)
            if len(ts):
                pub.push_chunk(filt(data).astype(np.float32), ts)
                n += len(ts)
    finally:
        pub.close()
    return n


def run(ctx: Any) -> None:
    """Worker target (``dpshm.control.filter_worker:run``); see the module docstring."""
    kw = dict(ctx.kwargs)
    views = dict(ctx.streams)
    own = None
    if not views:
        name = kw.get("stream")
        if not name:
            raise ConfigError(
                'the filter worker needs an input: START_WORKER with "streams": [NAME] '
                "or kwargs stream = NAME"
            )
        from dpshm.shm.view import SharedStreamView

        own = SharedStreamView(name, namespace=ctx.namespace)
        views = {name: own}
    if len(views) != 1:
        raise ConfigError(f"the filter worker filters one stream; got {sorted(views)}")
    ((name, view),) = views.items()
    try:
        filter_stream(
            view,
            str(kw.get("out") or f"{name}_filtered"),
            ctx.stop_event,
            band=kw.get("band"),
            notch=kw.get("notch"),
            order=int(kw.get("order", 4)),
            notch_q=float(kw.get("notch_q", 30.0)),
            lsl=bool(kw.get("lsl", False)),
            publish=ctx.publish_stream,
            logger=ctx.logger,
        )
    finally:
        if own is not None:
            own.close()
