"""Fan-out benchmark: one LSL stream read by N consumer processes.

Measured in one run, side by side, for each stream format and N:

* **dpshm**: the supervisor (``dpshm up``) plus N processes with a
  :class:`~dpshm.shm.view.SharedStreamView`, each calling
  ``next_window(seconds=1.0)`` in a loop: it sleeps until the supervisor's
  wake-up, then takes the newest 1 s window, zero-copy (``copy=False``, the
  dpshm idiom) or copied (``copy=True``, the same bytes moved as the
  baseline's ``unfold_buffer()``): two arms;
* **baseline**: N processes, each with the ORIGINAL dareplane-utils
  ``StreamWatcher`` (its own LSL inlet), calling ``update()`` and copying a 1 s
  window every 10 ms, as Dareplane modules do;
* **mne-lsl** (when installed): N processes, each with an mne-lsl
  ``StreamLSL`` (its own inlet, filled by its default acquisition thread every
  1 ms), taking ``get_data(winsize=1.0)`` every 10 ms when ``n_new_samples``
  says something arrived: what many LSL users would pick instead;
* **direct**: one process with a blocking LSL inlet: the latency floor.

The outlet (its own process) pushes 10 ms chunks on absolute deadlines,
stamped with ``local_clock()`` at push time; a consumer's latency is
``local_clock()`` when it has the chunk minus the chunk's newest timestamp.
CPU is the on-CPU time of the consumers, plus the supervisor for dpshm, over
the measurement window, in % of one core (Linux: the scheduler's nanosecond
counts, :func:`~dpshm.bench._common.process_cpu_s`); the
outlet's own CPU is kept apart (JSON). Consumers start, say ``ready``, and the
window opens once all are ready (imports and connects are not measured).

Each role runs as ``python -m dpshm.bench.fanout --role ROLE ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dpshm.bench._common import (
    CHUNK_S,
    NEEDS_ORIGINAL,
    Row,
    child_env,
    percentiles,
    process_cpu_s,
)

WINDOW_S = 1.0
READY_TIMEOUT_S = 30.0
WARMUP_S = 0.5
WINDOWS = ("view", "copy")  # dpshm arms: zero-copy and copied 1 s windows
FLOOR = "floor"  # diagnostic arm: consumers that only sleep on the doorbell, reading nothing
ARM_KEYS = {"view": "dpshm", "copy": "dpshm_copy", FLOOR: "dpshm_floor"}
NEEDS_SUPERVISOR = "needs the dpshm supervisor (dpshm.shm.supervisor, `dpshm up`)"
NEEDS_MNELSL = "baseline needs: pip install mne-lsl (or 'dpshm[bench]')"
MNELSL = "N mne-lsl StreamLSLs (1 ms acquisition)"

# -- roles (each runs in its own process) ---------------------------------------------


def _stop_flag() -> list[int]:
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    return stop


def _report(t: list[float], lat: list[float]) -> None:
    print(json.dumps({"t": t, "lat": lat}), flush=True)


def role_outlet(a: argparse.Namespace) -> None:
    """Child role: the LSL outlet pushing the benchmark stream until stopped."""
    from dpshm import lsl

    stop = _stop_flag()
    n = max(1, round(CHUNK_S * a.rate))
    chunk = np.random.default_rng(0).standard_normal((n, a.channels)).astype(np.float32)
    with lsl.Outlet(a.name, "EEG", a.channels, a.rate, "float32", source_id=a.name) as out:
        print("ready", flush=True)
        t0 = time.perf_counter()
        k = 0
        while not stop:
            k += 1
            delay = t0 + k * n / a.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            out.push_chunk(chunk, timestamp=lsl.local_clock())


def role_dpshm(a: argparse.Namespace) -> None:
    """Child role: one consumer reading the stream through a SharedStreamView."""
    from dpshm import lsl
    from dpshm.shm.view import SharedStreamView

    stop = _stop_flag()
    view = SharedStreamView(a.name, timeout=READY_TIMEOUT_S)  # shared within a resolve or two
    t: list[float] = []
    lat: list[float] = []
    copy = a.window == "copy"
    with view:
        if a.window == FLOOR:
            doorbell_floor(view, stop)
            return
        print("ready", flush=True)
        while not stop:
            win = view.next_window(seconds=WINDOW_S, timeout=0.1, copy=copy)
            if win is None:
                continue
            ts = win[1]
            now = lsl.local_clock()
            if len(ts):
                t.append(now)
                lat.append(now - float(ts[-1]))
    _report(t, lat)


def doorbell_floor(view: Any, stop: list[int]) -> None:
    """The wake-up floor: a blocking ``recv`` on the view's doorbell and nothing else.

    Runs until ``stop`` is non-empty; prints ``ready`` first (also
    ``wake_layers.py``'s ``recv`` kind).
    """
    bell = view._link.bell
    if bell is None:
        raise SystemExit("the floor arm needs doorbells (Linux, DPSHM_WAKE unset)")
    sock, buf = bell._sock, bytearray(8)
    print("ready", flush=True)
    while not stop:
        try:  # noqa: SIM105 -- a try costs nothing per wake, contextlib.suppress does
            sock.recv_into(buf)
        except BlockingIOError:  # the socket's receive timeout: look at the stop flag
            pass
    _report([], [])


def _every_chunk(
    stop: list[int], poll: Callable[[], float | None], clock: Callable[[], float]
) -> None:
    """A polling consumer's loop.

    ``poll()`` every :data:`CHUNK_S` (absolute deadlines) until ``stop``; ``poll``
    returns the newest timestamp of what it took, or None.
    """
    t: list[float] = []
    lat: list[float] = []
    t0 = time.perf_counter()
    k = 0
    while not stop:
        newest = poll()
        if newest is not None:
            now = clock()
            t.append(now)
            lat.append(now - newest)
        k += 1
        delay = t0 + k * CHUNK_S - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    _report(t, lat)


def role_dareplane(a: argparse.Namespace) -> None:
    """Child role: one consumer with the original dareplane-utils StreamWatcher."""
    from dpshm.bench._common import import_original

    sw_mod = import_original("dareplane_utils.stream_watcher.lsl_stream_watcher")
    pylsl = import_original("pylsl")  # the original reads LSL through pylsl itself
    assert sw_mod is not None and pylsl is not None
    stop = _stop_flag()
    sw = sw_mod.StreamWatcher(a.name, buffer_size_s=WINDOW_S)
    sw.connect_to_stream()
    print("ready", flush=True)

    def poll() -> float | None:
        sw.update()
        if not sw.n_new:
            return None
        sw.n_new = 0
        sw.unfold_buffer()
        return float(sw.unfold_buffer_t()[-1])

    _every_chunk(stop, poll, pylsl.local_clock)
    sw.disconnect()


def role_mnelsl(a: argparse.Namespace) -> None:
    """Child role: one consumer with an mne-lsl ``StreamLSL`` (its default acquisition)."""
    from mne_lsl.lsl import local_clock
    from mne_lsl.stream import StreamLSL

    stop = _stop_flag()
    stream = StreamLSL(WINDOW_S, name=a.name).connect(timeout=READY_TIMEOUT_S)  # its defaults
    print("ready", flush=True)

    def poll() -> float | None:
        if not stream.n_new_samples:
            return None
        _, ts = stream.get_data(winsize=WINDOW_S)  # resets n_new_samples
        return float(ts[-1]) if len(ts) else None

    _every_chunk(stop, poll, local_clock)
    stream.disconnect()


def mnelsl_available() -> bool:
    """Whether mne-lsl (the ``StreamLSL`` arm) is installed."""
    return importlib.util.find_spec("mne_lsl") is not None


def role_direct(a: argparse.Namespace) -> None:
    """Child role: one consumer with its own blocking pylsl inlet."""
    from dpshm import lsl

    stop = _stop_flag()
    spec = lsl.find_stream(name=a.name, timeout=READY_TIMEOUT_S)
    data = np.zeros((4096, spec.n_channels), np.float32)
    ts = np.zeros(4096)
    t: list[float] = []
    lat: list[float] = []
    with lsl.Inlet(spec) as inlet:
        print("ready", flush=True)
        while not stop:
            n = inlet.pull_into(data, ts, timeout=0.1)
            now = lsl.local_clock()
            if n:
                t.append(now)
                lat.append(now - float(ts[n - 1]))
    _report(t, lat)


ROLES = {"outlet": role_outlet, "dpshm": role_dpshm, "dareplane": role_dareplane}
ROLES["direct"] = role_direct
ROLES["mnelsl"] = role_mnelsl


# -- orchestration ---------------------------------------------------------------------


class _Child:
    """One benchmark process: started, awaited ready, CPU sampled, stopped."""

    def __init__(self, args: list[str], env: dict[str, str], what: str) -> None:
        self.what = repr(what)
        # a pipe could fill up with liblsl's log lines; closed by stop()
        self.err = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=self.err, text=True
        )

    def _stderr_tail(self) -> str:
        self.err.seek(0)
        lines = self.err.read().decode(errors="replace").strip().splitlines()
        return "\n".join(lines[-8:]) or "(nothing on stderr)"

    def ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        import selectors

        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise TimeoutError(
                        f"benchmark process {self.what} not ready within {timeout} s (a "
                        f"loaded machine? try again); its stderr:\n{self._stderr_tail()}"
                    )
                line = self.proc.stdout.readline()
                if line.strip() == "ready":
                    return
                if not line:
                    code = self.proc.wait(5)
                    raise RuntimeError(
                        f"benchmark process {self.what} exited with code {code}; its "
                        f"stderr:\n{self._stderr_tail()}"
                    )

    def cpu(self) -> float:
        return process_cpu_s(self.proc.pid)

    def stop(self, timeout: float = 10.0) -> str:
        """SIGTERM, wait, return what the process printed since ``ready``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=5)
        finally:
            self.err.close()
        return out or ""


def _role_args(role: str, **kw: object) -> list[str]:
    args = [sys.executable, "-m", "dpshm.bench.fanout", "--role", role]
    for k, v in kw.items():
        args += [f"--{k}", str(v)]
    return args


def _latencies(out: str, t0: float, t1: float) -> list[float]:
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            r = json.loads(line)
            t, lat = np.asarray(r["t"]), np.asarray(r["lat"])
            return lat[(t >= t0) & (t <= t1)].tolist()
    return []


def _case(
    role: str, n: int, seconds: float, env: dict[str, str], outlet: _Child, kw: dict[str, Any],
    others: Sequence[_Child] = (),
) -> dict[str, Any]:  # fmt: skip
    """Run ``n`` consumers of ``role`` for ``seconds``; CPU % and latencies in ms."""
    from dpshm import lsl

    consumers: list[_Child] = []
    lat: list[float] = []
    try:
        for _ in range(n):
            consumers.append(_Child(_role_args(role, **kw), env, role))
        for c in consumers:
            c.ready()
        time.sleep(WARMUP_S)  # let the consumers settle into their loop
        procs = [*consumers, *others]
        cpu0, out0 = [c.cpu() for c in procs], outlet.cpu()
        t0, w0 = lsl.local_clock(), time.perf_counter()
        time.sleep(seconds)  # the measurement window
        wall = time.perf_counter() - w0
        cpu1, out1 = [c.cpu() for c in procs], outlet.cpu()
        t1 = lsl.local_clock()
    finally:
        outs = [c.stop() for c in consumers]
    for out in outs:
        lat += _latencies(out, t0, t1)
    p50, p99 = percentiles(lat, 1e3)
    k = len(consumers)
    return {
        "cpu": 100 * (sum(cpu1) - sum(cpu0)) / wall,
        "others_cpu": 100 * (sum(cpu1[k:]) - sum(cpu0[k:])) / wall,  # the supervisor's share
        "outlet_cpu": 100 * (out1 - out0) / wall,
        "p50_ms": p50,
        "p99_ms": p99,
        "n_lat": len(lat),
    }


def supervisor_args(name: str) -> list[str]:
    """Command line of the benchmark's supervisor.

    It shares only stream ``name``, with the default resolve interval (1 s), as
    a user runs it, and 5 s rings.
    """
    return [sys.executable, "-m", "dpshm", "up", "--quiet", "--stream", name, "--buffer-s", "5"]


def wait_shared(name: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Block until a supervisor (of this process's ``$DPSHM_NAMESPACE``) shares ``name``."""
    from dpshm.shm.view import SharedStreamView

    try:
        SharedStreamView(name, timeout=timeout).close()
    except LookupError as exc:
        raise TimeoutError(f"no supervisor shared {name!r} within {timeout} s: {exc}") from None


def supervisor_available() -> bool:
    """Whether this installation has the supervisor (``dpshm up``)."""
    return importlib.util.find_spec("dpshm.shm.supervisor") is not None


def run(
    channels: int,
    rate: float,
    ns: Sequence[int],
    seconds: float,
    windows: Sequence[str] = WINDOWS,
    wake: str | None = None,
    mnelsl: bool = True,
) -> dict[str, Any]:
    """Measure one stream format for every N; raw results as a dict.

    Keys: ``direct`` (one case); ``dpshm`` (zero-copy windows), ``dpshm_copy``
    (copied windows), ``dpshm_floor`` (consumers that only sleep on the
    doorbell: the wake-up floor), ``dareplane`` and ``mnelsl`` (each ``{N:
    case}``, empty when that arm was not asked for, or the supervisor, the
    original or mne-lsl is not installed; ``mnelsl=False`` skips mne-lsl).
    ``windows`` chooses the dpshm arms (``"view"``, ``"copy"``, ``"floor"``);
    ``wake`` sets the consumers' ``DPSHM_WAKE`` (None: the default wake path).
    """
    from dpshm.bench.roundtrip import original_available

    res: dict[str, Any] = {
        "direct": None, "dareplane": {}, "mnelsl": {}, **{k: {} for k in ARM_KEYS.values()}
    }  # fmt: skip
    uid = uuid.uuid4().hex[:8]
    name = f"dpshmbench{uid}"
    kw = {"name": name, "channels": channels, "rate": rate}
    with tempfile.TemporaryDirectory(prefix="dpshm-bench-") as runtime:
        # a private runtime dir and namespace: the benchmark's supervisor meets no other
        env = child_env(XDG_RUNTIME_DIR=runtime, DPSHM_NAMESPACE=f"bench{uid}")
        if wake:
            env["DPSHM_WAKE"] = wake
        outlet = _Child(_role_args("outlet", **kw), env, "outlet")
        try:
            outlet.ready()
            res["direct"] = _case("direct", 1, seconds, env, outlet, kw)
            if supervisor_available() and windows:
                sup = _Child(supervisor_args(name), env, "dpshm up")
                try:
                    for n in ns:  # the arms alternate, so a drifting load hits both
                        for w in windows:
                            res[ARM_KEYS[w]][n] = _case(
                                "dpshm", n, seconds, env, outlet, {**kw, "window": w}, [sup]
                            )
                finally:
                    sup.stop()
            if original_available():
                for n in ns:
                    res["dareplane"][n] = _case("dareplane", n, seconds, env, outlet, kw)
            if mnelsl and mnelsl_available():
                for n in ns:
                    res["mnelsl"][n] = _case("mnelsl", n, seconds, env, outlet, kw)
        finally:
            outlet.stop()
    return res


def config_tag(channels: int, rate: float) -> str:
    """``"64ch@1kHz"``."""
    return f"{channels}ch@{rate / 1000:g}kHz"


def rows(channels: int, rate: float, ns: Sequence[int], res: dict[str, Any]) -> list[Row]:
    """Suite rows from the result of :func:`run`, per N.

    CPU of the consumers (+ supervisor), the same plus the outlet's, and latency
    p50/p99 against the direct inlet and against the original StreamWatchers.
    """
    tag = config_tag(channels, rate)
    need_sup = None if res["dpshm"] else NEEDS_SUPERVISOR
    need_orig = None if res["dareplane"] else NEEDS_ORIGINAL
    direct = res["direct"]
    both = "; ".join(x for x in (need_sup, need_orig) if x) or None
    sw = "N original StreamWatchers"
    out = []
    for n in ns:
        a, b = res["dpshm"].get(n), res["dareplane"].get(n)
        total_a = a and a["cpu"] + a["outlet_cpu"]
        total_b = b and b["cpu"] + b["outlet_cpu"]
        c = res.get("dpshm_copy", {}).get(n)
        out += [
            Row(f"fanout_cpu/{tag}/N={n}", f"fan-out CPU, {tag}, N={n}", "% core",
                a and a["cpu"], f"{sw} (an LSL inlet each)", b and b["cpu"], both,
                {"dpshm": a, "dareplane": b}),
            Row(f"fanout_cpu_total/{tag}/N={n}", f"fan-out CPU incl. outlet, {tag}, N={n}",
                "% core", total_a, f"{sw} + outlet", total_b, both),
            Row(f"fanout_cpu_copy/{tag}/N={n}", f"fan-out CPU, copied windows, {tag}, N={n}",
                "% core", c and c["cpu"], f"{sw} (an LSL inlet each)", b and b["cpu"], both,
                {"dpshm_copy": c}),
        ]  # fmt: skip
        for q in ("p50", "p99"):
            lat_a = a and a[f"{q}_ms"]
            out.append(Row(f"latency_{q}/{tag}/N={n}", f"latency {q}, {tag}, N={n}", "ms",
                           lat_a, "direct LSL inlet", direct[f"{q}_ms"], need_sup))  # fmt: skip
        for q in ("p50", "p99"):
            out.append(Row(f"latency_{q}_vs_original/{tag}/N={n}", f"latency {q}, {tag}, N={n}",
                           "ms", a and a[f"{q}_ms"], f"{sw} (10 ms update loop)",
                           b and b[f"{q}_ms"], both))  # fmt: skip
        m = res.get("mnelsl", {}).get(n)
        need_m = "; ".join(x for x in (need_sup, None if m else NEEDS_MNELSL) if x) or None
        out.append(Row(f"fanout_cpu_vs_mnelsl/{tag}/N={n}", f"fan-out CPU, {tag}, N={n}",
                       "% core", a and a["cpu"], MNELSL, m and m["cpu"], need_m,
                       {"mnelsl": m}))  # fmt: skip
        for q in ("p50", "p99"):
            out.append(Row(f"latency_{q}_vs_mnelsl/{tag}/N={n}", f"latency {q}, {tag}, N={n}",
                           "ms", a and a[f"{q}_ms"], f"{MNELSL}, 10 ms loop",
                           m and m[f"{q}_ms"], need_m))  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run one role (internal: started by :func:`run`)."""
    p = argparse.ArgumentParser(description="a role of the dpshm fan-out benchmark")
    p.add_argument("--role", choices=sorted(ROLES), required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--channels", type=int, required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--window", choices=sorted(ARM_KEYS), default="view")
    a = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        ROLES[a.role](a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
