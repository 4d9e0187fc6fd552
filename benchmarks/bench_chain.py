"""Processing-chain benchmark: raw signal -> one filter stage -> 4 consumers of the filtered signal.

Side by side in one run, for 64 ch @ 1 kHz and 256 ch @ 2 kHz (float32, 10 ms chunks
pushed on an LSL outlet, stamped with ``local_clock()`` at push):

(a)  dpshm: ``dpshm up`` shares the raw stream; a filter process reads it with a
     ``SharedStreamView`` and publishes the filtered signal into shared memory
     (:func:`dpshm.control.filter_worker.filter_stream`: the shipped filter
     worker's loop, with the input's timestamps); 4 consumer processes read the
     filtered stream with ``SharedStreamView.next_window(seconds=1.0)``.
(at) the same chain with the filter as a thread worker inside the supervisor
     (``[workers]`` in its config, ``mode = "thread"``, started with
     ``START_WORKER`` over its TCP command port): one process fewer.
(a0) dpshm without the filter hop: the 4 consumers read the raw shared stream
     (the reference for what the hop adds).
(b)  the Dareplane way: a filter process with its own LSL inlet (blocking pull,
     the cheapest way to read LSL) publishing an LSL outlet; 4 consumer
     processes with the ORIGINAL dareplane-utils ``StreamWatcher`` (an inlet
     each, ``update()`` and a 1 s window every 10 ms, as Dareplane modules do).

The filter is the same in (a) and (b): Butterworth band-pass 1-40 Hz (order 4)
plus a 50 Hz notch, ``sosfilt`` with its state carried across chunks.
CPU: on-CPU time (Linux scheduler counts) of everything after the raw outlet --
(a) supervisor + filter + consumers, (b) filter + consumers -- in % of one core;
the raw outlet's own CPU is listed apart. Latency: ``local_clock()`` when a
consumer has the filtered chunk minus the raw push time of its newest sample.

Usage::

    python benchmarks/bench_chain.py             # both formats, 5 s per arm
    python benchmarks/bench_chain.py --quick     # 64ch@1kHz only, 3 s per arm
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from dpshm.bench import fanout
from dpshm.bench._common import child_env

N_CONSUMERS = 4
BAND, NOTCH = (1.0, 40.0), 50.0
CONFIGS = ((64, 1000.0), (256, 2000.0))


# -- roles (each in its own process: python benchmarks/bench_chain.py --role ROLE) -----------


def _stop_event() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def role_dpshm_filter(a: argparse.Namespace) -> None:
    from dpshm.control.filter_worker import filter_stream

    stop = _stop_event()
    fanout.wait_shared(a.name)
    from dpshm.shm.view import SharedStreamView

    with SharedStreamView(a.name) as view:
        threading.Thread(target=_say_ready_when_published, args=(a.out,), daemon=True).start()
        filter_stream(view, a.out, stop, band=BAND, notch=NOTCH)


def _say_ready_when_published(out: str) -> None:
    fanout.wait_shared(out)
    print("ready", flush=True)


def role_lsl_filter(a: argparse.Namespace) -> None:
    from dpshm import lsl
    from dpshm.control.filter_worker import LiveFilter, design

    stop = _stop_event()
    spec = lsl.find_stream(name=a.name, timeout=fanout.READY_TIMEOUT_S)
    filt = LiveFilter(design(spec.srate, BAND, NOTCH), spec.n_channels)
    data = np.zeros((4096, spec.n_channels), np.float32)
    ts = np.zeros(4096)
    with (
        lsl.Inlet(spec) as inlet,
        lsl.Outlet(a.out, "EEG", spec.n_channels, spec.srate, "float32", source_id=a.out) as out,
    ):
        print("ready", flush=True)
        while not stop.is_set():
            n = inlet.pull_into(data, ts, timeout=0.1)
            if n:
                out.push_chunk(filt(data[:n]).astype(np.float32), ts[:n].tolist())


ROLES = {"dpshm_filter": role_dpshm_filter, "lsl_filter": role_lsl_filter}


# -- orchestration ---------------------------------------------------------------------------


def _role(role: str, name: str, out: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, "--name", name,
            "--out", out]  # fmt: skip


CONFIG = """
[workers.filter]
target = "dpshm.control.filter_worker:run"
mode = "thread"
kwargs = {{ out = "{out}", band = [{low}, {high}], notch = {notch} }}
"""


def _supervisor_with_filter(raw: str, out: str, env: dict[str, str], tmp: str) -> Any:
    """``dpshm up`` sharing ``raw`` with the filter declared as a thread worker, started."""
    cfg = Path(tmp) / "chain.toml"
    cfg.write_text(CONFIG.format(out=out, low=BAND[0], high=BAND[1], notch=NOTCH))
    sup = fanout._Child([*fanout.supervisor_args(raw), "--config", str(cfg), "--port", "0"],
                        env, "dpshm up with a filter worker")  # fmt: skip
    assert sup.proc.stdout is not None
    deadline = time.monotonic() + fanout.READY_TIMEOUT_S
    line = ""
    while "commands on " not in line:
        left = deadline - time.monotonic()
        if (
            left <= 0
            or sup.proc.poll() is not None
            or not select.select([sup.proc.stdout], [], [], left)[0]
        ):
            sup.stop()
            raise RuntimeError(f"the supervisor printed no command port; last line {line!r}")
        line = sup.proc.stdout.readline()
    port = int(line.split("commands on ")[1].split()[0].rsplit(":", 1)[1])
    _wait_shared_in(env, raw)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.recv(1024)  # the banner
        c.sendall(b'START_WORKER|{"worker": "filter", "streams": ["' + raw.encode() + b'"]};')
        reply = c.recv(1024).decode()
    if not reply.startswith("filter-"):
        sup.stop()
        raise RuntimeError(f"START_WORKER failed: {reply!r}")
    _wait_shared_in(env, out)
    return sup


def _wait_shared_in(env: dict[str, str], name: str) -> None:
    """``fanout.wait_shared`` with the children's runtime directory and namespace."""
    keys = ("XDG_RUNTIME_DIR", "DPSHM_NAMESPACE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: env[k] for k in keys})
    try:
        fanout.wait_shared(name)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(channels: int, rate: float, seconds: float) -> dict[str, Any]:
    """One stream format: the three arms, each a ``fanout._case`` result dict."""
    uid = uuid.uuid4().hex[:8]
    raw = f"chain{uid}"
    kw = {"name": raw, "channels": channels, "rate": rate}
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dpshm-bench-") as runtime:
        env = child_env(XDG_RUNTIME_DIR=runtime, DPSHM_NAMESPACE=f"chain{uid}")
        outlet = fanout._Child(fanout._role_args("outlet", **kw), env, "raw outlet")
        try:
            outlet.ready()
            # (b) the Dareplane way
            out_b = f"{raw}_lslfilt"
            filt = fanout._Child(_role("lsl_filter", raw, out_b), env, "LSL filter")
            try:
                filt.ready()
                res["b"] = fanout._case(
                    "dareplane", N_CONSUMERS, seconds, env, outlet, {**kw, "name": out_b}, [filt]
                )
            finally:
                filt.stop()
            sup = fanout._Child(fanout.supervisor_args(raw), env, "dpshm up")
            try:
                # (a0) the consumers on the raw shared stream: no filter hop
                res["a0"] = fanout._case(
                    "dpshm", N_CONSUMERS, seconds, env, outlet, {**kw, "window": "view"}, [sup]
                )
                # (a) the chain through shared memory
                out_a = f"{raw}_filtered"
                filt = fanout._Child(_role("dpshm_filter", raw, out_a), env, "dpshm filter")
                try:
                    filt.ready()
                    res["a"] = fanout._case(
                        "dpshm", N_CONSUMERS, seconds, env, outlet,
                        {**kw, "name": out_a, "window": "view"}, [sup, filt],
                    )  # fmt: skip
                finally:
                    filt.stop()
            finally:
                sup.stop()
            # (at) the filter as a thread worker inside the supervisor
            out_t = f"{raw}_thread"
            sup = _supervisor_with_filter(raw, out_t, env, runtime)
            try:
                res["at"] = fanout._case(
                    "dpshm", N_CONSUMERS, seconds, env, outlet,
                    {**kw, "name": out_t, "window": "view"}, [sup],
                )  # fmt: skip
            finally:
                sup.stop()
        finally:
            outlet.stop()
    return res


def _table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| stream | arm | CPU % core (after the outlet) | latency p50 ms | p99 ms | "
        "raw outlet CPU % |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "a": "(a) dpshm: filter publishes into shm, 4 views",
        "at": "(at) dpshm, filter as a thread worker in the supervisor, 4 views",
        "a0": "(a0) dpshm, no filter hop: 4 views of the raw stream",
        "b": "(b) Dareplane: filter inlet -> LSL outlet, 4 StreamWatchers",
    }
    for tag, res in results.items():
        for arm in ("a", "at", "a0", "b"):
            r = res[arm]
            lines.append(
                f"| {tag} | {names[arm]} | {r['cpu']:.1f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['outlet_cpu']:.1f} |"
            )
    lines.append("")
    for tag, res in results.items():
        a, a0, b, at = res["a"], res["a0"], res["b"], res["at"]
        lines.append(
            f"{tag}: thread worker: CPU (at)/(b) = {at['cpu'] / b['cpu']:.2f}; its hop adds "
            f"{at['p99_ms'] - a0['p99_ms']:+.2f} ms p99, {at['p50_ms'] - a0['p50_ms']:+.2f} ms p50"
        )
        lines.append(
            f"{tag}: CPU (a)/(b) = {a['cpu'] / b['cpu']:.2f} (target <= 0.33); the filter hop "
            f"adds {a['p99_ms'] - a0['p99_ms']:+.2f} ms p99, {a['p50_ms'] - a0['p50_ms']:+.2f} "
            f"ms p50 (target <= 0.5 ms p99); latency p99 (a)/(b) = "
            f"{a['p99_ms'] / b['p99_ms']:.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="64ch@1kHz only, 3 s per arm")
    p.add_argument("--seconds", type=float, default=None, help="measurement window per arm")
    p.add_argument("--json", default=None, help="also write the raw results to this file")
    a = p.parse_args()
    if a.role:
        with contextlib.suppress(KeyboardInterrupt):
            ROLES[a.role](a)
        return 0
    from dpshm.bench.roundtrip import original_available

    if not original_available():
        print("arm (b) needs dareplane-utils: pip install 'dpshm[bench]'", file=sys.stderr)
        return 1
    configs = CONFIGS[:1] if a.quick else CONFIGS
    seconds = a.seconds or (3.0 if a.quick else 5.0)
    results = {}
    for ch, rate in configs:
        tag = fanout.config_tag(ch, rate)
        print(f"{tag}: measuring (b), (a0), (a), (at) for {seconds:g} s each ...", flush=True)
        results[tag] = run(ch, rate, seconds)
    print(_table(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
