"""CPU of ``dpshm view`` with one open page, beside the supervisor's, in one run.

For each stream size (64 ch @ 1 kHz, 256 ch @ 2 kHz; float32, 10 ms chunks
from a ``dpshm mock`` outlet process):

1. ``dpshm up`` alone: the supervisor's CPU.
2. ``dpshm view`` (its own process) with one simulated page: the page's two
   event streams, status (``/api/events``) and trace (``/api/trace``: the
   new min/max columns at the viewer's frame rate, 10 frames a second, 5 s
   window, 1200 columns; decoded as the page does), first with the page's
   default 16 channels shown, then with every channel shown. Measured: the
   viewer's and the supervisor's CPU, the frames and bytes per second
   received.
3. ``dpshm up`` alone again (the supervisor with and without the viewer, in
   one run).
4. Baseline: one plain pylsl inlet on the stream in its own process, pulling
   every 40 ms into a preallocated numpy buffer (``pull_chunk(dest_obj=...)``:
   the cheapest way a separate viewer could get the samples).

CPU is read from the scheduler's nanosecond counts (``process_cpu_s``).
Ratios: viewer / inlet, supervisor with / without viewer.

Run: ``python benchmarks/bench_view.py [--seconds S] [--quick]``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    import dpshm  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from dpshm.bench._common import child_env, process_cpu_s  # noqa: E402
from dpshm.shm import registry  # noqa: E402

WIDTH = 1200
WINDOW_S = 5

INLET = r"""
import sys, time, numpy as np, pylsl
name, seconds = sys.argv[1], float(sys.argv[2])
info = pylsl.resolve_byprop("name", name, 1, 10.0)[0]
inlet = pylsl.StreamInlet(info, max_buflen=10)
n_ch, rate = info.channel_count(), info.nominal_srate()
buf = np.zeros((int(rate), n_ch), np.float32)
ts = np.zeros(int(rate))
print("ready", flush=True)
end = time.monotonic() + seconds
nxt = time.monotonic()
while time.monotonic() < end:
    nxt += 0.040
    time.sleep(max(0.0, nxt - time.monotonic()))
    inlet.pull_chunk(timeout=0.0, max_samples=len(buf), dest_obj=buf)
"""


def _start(ns: str, *args: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dpshm", *args],
        env=child_env(DPSHM_NAMESPACE=ns, PYTHONPATH=str(HERE.parent)),
        stdout=stdout,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def _cpu(pids: list[int], seconds: float) -> list[float]:
    """Percent of one core used by each pid over ``seconds``."""
    t0, c0 = time.monotonic(), [process_cpu_s(p) for p in pids]
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return [100.0 * (process_cpu_s(p) - c) / dt for p, c in zip(pids, c0, strict=True)]


def _wait_stream(ns: str, name: str, timeout: float = 30.0) -> registry.StreamEntry:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reg = registry.read_registry(ns)
            for e in reg.streams.values():
                if e.name == name:
                    return e
        except LookupError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"stream {name!r} not shared within {timeout} s")


class Page:
    """What one open page asks of the viewer: the status events and the trace events."""

    def __init__(self, port: int, key: str, nch: int):
        self.stop = threading.Event()
        self.frames = 0
        self.bytes = 0
        q = f"key={key}&seconds={WINDOW_S}&width={WIDTH}&ch0=0&nch={nch}"
        self._threads = [
            threading.Thread(target=self._read, args=(port, "/api/events", False), daemon=True),
            threading.Thread(target=self._read, args=(port, f"/api/trace?{q}", True), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read(self, port: int, path: str, trace: bool) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        while not self.stop.is_set():
            line = resp.fp.readline()
            if not line:
                break
            if trace and line.startswith(b"data: "):
                body = base64.b64decode(line[6:])  # what the page decodes
                self.frames += 1
                self.bytes += len(body)
        resp.close()
        conn.close()

    def reset(self) -> None:
        self.frames = 0
        self.bytes = 0

    def close(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(10)


def run_case(n_ch: int, rate: float, seconds: float) -> dict:
    ns = f"bv{uuid.uuid4().hex[:8]}"
    name = f"{ns}_eeg"
    procs = []
    out: dict = {"stream": f"{n_ch} ch @ {rate / 1000:g} kHz"}
    try:
        procs.append(_start(ns, "mock", "--name", name, "--channels", str(n_ch), "--rate",
                            str(rate), "--no-markers"))  # fmt: skip
        sup = _start(ns, "up", "--quiet", "--stream", name)
        procs.append(sup)
        entry = _wait_stream(ns, name)
        time.sleep(2.0)  # warm-up
        out["sup_alone"] = _cpu([sup.pid], seconds)[0]

        view = _start(ns, "view", "--port", "0", "--no-browser", stdout=subprocess.PIPE)
        procs.append(view)
        line = view.stdout.readline()  # type: ignore[union-attr]
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        for label, nch in (("16", min(16, n_ch)), ("all", n_ch)):
            page = Page(port, entry.key, nch)
            time.sleep(2.0)
            page.reset()
            s, v = _cpu([sup.pid, view.pid], seconds)
            frames, nbytes = page.frames, page.bytes
            page.close()
            out[f"view_{label}"] = {
                "sup": s,
                "viewer": v,
                "frames_per_s": frames / seconds,
                "kB_per_s": nbytes / seconds / 1e3,
            }
        _stop(view)
        procs.remove(view)
        time.sleep(1.0)
        out["sup_alone_again"] = _cpu([sup.pid], seconds)[0]

        inlet = subprocess.Popen(
            [sys.executable, "-c", INLET, name, str(seconds + 10)],
            stdout=subprocess.PIPE, text=True, env=child_env(),
        )  # fmt: skip
        procs.append(inlet)
        inlet.stdout.readline()  # type: ignore[union-attr]
        time.sleep(2.0)
        s, i = _cpu([sup.pid, inlet.pid], seconds)
        out["inlet"] = {"sup": s, "inlet": i}
    finally:
        for p in reversed(procs):
            _stop(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per arm")
    ap.add_argument("--quick", action="store_true", help="64 ch @ 1 kHz only, 3 s per arm")
    args = ap.parse_args(argv)
    cases = [(64, 1000.0)] + ([] if args.quick else [(256, 2000.0)])
    secs = 3.0 if args.quick else args.seconds
    print(f"bench_view: {secs:g} s per arm, {os.cpu_count()} cores; CPU in % of one core\n")
    rows = [run_case(n, r, secs) for n, r in cases]
    head = (
        "| stream | page shows | viewer CPU | one pylsl inlet | viewer / inlet | "
        "supervisor alone | supervisor + viewer | supervisor alone again | frames/s | kB/s |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        for label in ("16", "all"):
            v = r[f"view_{label}"]
            ratio = v["viewer"] / r["inlet"]["inlet"] if r["inlet"]["inlet"] else float("nan")
            print(
                f"| {r['stream']} | {label} ch | {v['viewer']:.1f} % | {r['inlet']['inlet']:.1f} % "
                f"| {ratio:.2f} | {r['sup_alone']:.1f} % | {v['sup']:.1f} % | "
                f"{r['sup_alone_again']:.1f} % | {v['frames_per_s']:.1f} | "
                f"{v['kB_per_s']:.0f} |"
            )
    print()
    for r in rows:
        v = r["view_all"]
        print(
            f"{r['stream']}: supervisor with viewer / without = "
            f"{v['sup'] / r['sup_alone']:.2f} (alone twice: {r['sup_alone']:.1f} %, "
            f"{r['sup_alone_again']:.1f} %; with the inlet instead: {r['inlet']['sup']:.1f} %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
