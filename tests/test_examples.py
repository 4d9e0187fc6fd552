"""Every script in examples/ runs as a real subprocess, exits cleanly and says something true.

Each example has one entry in ``EXAMPLES`` (script -> test function). A script
without an entry fails ``test_every_example_is_exercised``: add its run here
when you add an example, so that none rots.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from supervisor_util import Proc, Sup, stop_all

from dpshm.dareplane.procs import stop_process_tree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
TIMEOUT_S = 60.0  # generous upper bound for a loaded 2-core machine; runs take ~1-3 s


def run_example(
    script: str, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<script>`` to completion; assert exit code 0 and no traceback."""
    r = subprocess.run(
        [sys.executable, str(EXAMPLES_DIR / script), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=ENV if env is None else env,
        cwd=cwd,
    )
    assert r.returncode == 0, f"{script} exited with {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r


# -- one check per example ------------------------------------------------------------------
def check_event_loop(tmp_path: Path, unique_name: str) -> None:
    out = run_example("event_loop.py", cwd=tmp_path).stdout
    assert "events: ['started', 'half-way']" in out, out
    m = re.search(r"(\d+) ticks, mean period ([\d.]+) ms \(dt_s = 10 ms\)", out)
    assert m, out
    # the loop ends itself after 1 s at 100 Hz: about 100 ticks (missed ones are counted)
    missed = int(re.search(r"missed ticks: (\d+)", out).group(1))
    assert 90 <= int(m.group(1)) + missed <= 110, out
    assert re.search(r"sleep_s\(0\.002\) took ([\d.]+) ms", out), out
    took = float(re.search(r"sleep_s\(0\.002\) took ([\d.]+) ms", out).group(1))
    assert took >= 2.0, out  # sleep_s never returns early


def check_ring_demo(tmp_path: Path, unique_name: str) -> None:
    out = run_example(
        "ring_demo.py", "--seconds", "1", "--channels", "4", "--readers", "1",
        "--name", unique_name, cwd=tmp_path,
    ).stdout  # fmt: skip
    m = re.search(r"reader 1 done: received (\d+) \+ lost (\d+) = samples (\d+)\.\.(\d+)", out)
    assert m, out
    received, lost, first, last = map(int, m.groups())
    assert received > 0 and received + lost == last - first, out
    assert "bad chunks 0" in out, out
    assert not (Path("/dev/shm") / f"dpshm_{unique_name}").exists()


def _recv_until(sock: socket.socket, expected: bytes) -> bytes:
    data = b""
    while not data.endswith(expected):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def check_dareplane_module(tmp_path: Path, unique_name: str) -> None:
    log = tmp_path / "module.txt"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES_DIR / "dareplane_module.py"), "--port", "0"],
            stdout=f, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path,
        )  # fmt: skip
    try:
        m = wait_until(
            lambda: re.search(r"example_module listening on 127\.0\.0\.1:(\d+)", log.read_text()),
            timeout=TIMEOUT_S,
        )
        with socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=10) as s:
            s.settimeout(10)
            assert _recv_until(s, b"\n") == b"Connected to example_module\n"
            s.sendall(b"GET_PCOMMS;")
            pcomms = b"START|SET|STATE|STOP|CLOSE|GET_PCOMMS|UP"
            assert _recv_until(s, pcomms) == pcomms
            s.sendall(b'SET|{"trial": 3};STATE;')
            assert _recv_until(s, b"\n") == b'{"trial": 3}\n'
            s.sendall(b'START|{"interval_s": 0.02};')
            wait_until(lambda: "tick 2" in log.read_text(), timeout=TIMEOUT_S)
            s.sendall(b"STOP;CLOSE;")
            assert proc.wait(timeout=TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            stop_process_tree(proc, grace_s=1.0)
    text = log.read_text()
    assert "INFO - tick 1" in text and "Traceback" not in text, text


def check_log_forwarding(tmp_path: Path, unique_name: str) -> None:
    logfile = tmp_path / "session.log"
    out = run_example("log_forwarding.py", "--logfile", str(logfile), cwd=tmp_path).stdout
    assert "received INFO    example_module: decoder started with 64 channels at 1000.0 Hz" in out
    assert "received WARNING example_module: trial 7: no response within 2 s" in out, out
    assert "3 records received" in out, out
    text = logfile.read_text()  # the receiver's file: formatted records and the traceback
    assert "example_module - ERROR - could not read the configuration" in text, text
    assert "KeyError: 'threshold'" in text, text


def check_stream_watcher(tmp_path: Path, unique_name: str) -> None:
    # starts its own mock LSL outlet (unique name per run) and watches it for 0.5 s
    out = run_example("stream_watcher.py", "--seconds", "0.5", cwd=tmp_path).stdout
    assert "connected: channels ['Fz', 'Cz', 'Pz', 'Oz'], buffer (250, 4)" in out, out
    counts = [int(n) for n in re.findall(r"^\s*(\d+) new samples, last \[", out, re.M)]
    assert counts and all(n > 0 for n in counts), out


# -- examples that read streams shared by a supervisor ----------------------------------------
class Supervised:
    """``dpshm mock`` + ``dpshm up`` on a private namespace, shared by the examples below."""

    def __init__(self, tag: str) -> None:
        self.namespace, self.signal, self.markers = f"ns{tag}", f"EEG{tag}", f"Mk{tag}"
        self.env = {**ENV, "DPSHM_NAMESPACE": self.namespace}  # for the examples it runs
        self.procs: list[Proc] = []

    def start(self) -> Supervised:
        mock = ["-m", "dpshm", "mock", "--name", self.signal, "--marker-name", self.markers,
                "--channels", "4", "--rate", "250"]  # fmt: skip
        self.procs.append(Proc(self.namespace, mock))
        # the supervisor first in the list: it is stopped first and unlinks its rings
        self.procs.insert(0, Sup(self.namespace, self.signal, self.markers))
        from dpshm import SharedStreamView

        def shared() -> bool:
            try:
                for name in (self.signal, self.markers):
                    SharedStreamView(name, namespace=self.namespace).close()
            except LookupError:
                return False
            return True

        try:
            wait_until(shared, timeout=TIMEOUT_S, interval=0.1)
        except TimeoutError:
            raise AssertionError(
                "mock + supervisor did not share the streams:\n"
                + "\n".join(p.output[-1500:] for p in self.procs)
            ) from None
        return self

    def close(self) -> None:
        stop_all(self.namespace, self.procs)


@pytest.fixture(scope="module")
def supervised() -> Iterator[Supervised]:
    import uuid

    sup = Supervised(uuid.uuid4().hex[:8])
    try:
        yield sup.start()
    finally:
        sup.close()


def run_supervised(script: str, sup: Supervised, stream: str, seconds: str, cwd: Path) -> str:
    args = ("--stream", stream, "--namespace", sup.namespace, "--seconds", seconds)
    return run_example(script, *args, cwd=cwd).stdout


def check_consumer(tmp_path: Path, sup: Supervised) -> None:
    out = run_supervised("consumer.py", sup, sup.signal, "0.6", tmp_path)
    assert f"attached to '{sup.signal}': 4 ch float32 at 250 Hz" in out, out
    rms = re.findall(r"newest \d+ samples up to t=[\d.]+: RMS \[([\d. ]+)\]", out)
    assert rms, out
    # the mock's channels are unit-amplitude sines (RMS ~0.71) plus a little noise
    assert all(0.5 < float(v) < 0.9 for line in rms for v in line.split()), out


def check_waiting_consumer(tmp_path: Path, sup: Supervised) -> None:
    out = run_supervised("waiting_consumer.py", sup, sup.signal, "0.6", tmp_path)
    m = re.search(r"done: received (\d+), lost (\d+)", out)
    assert m, out
    # ~0.6 s at 250 Hz; at least a fifth of it even on a loaded machine, nothing lost
    assert int(m.group(1)) >= 30 and int(m.group(2)) == 0, out


def check_closed_loop(tmp_path: Path, sup: Supervised) -> None:
    out = run_supervised("closed_loop.py", sup, sup.signal, "0.6", tmp_path)
    m = re.search(
        r"done: (\d+) windows, (\d+) new samples, (\d+) skipped, (\d+) lost; last RMS ([\d.]+)",
        out,
    )
    assert m, out
    windows, new, skipped, lost = map(int, m.groups()[:4])
    assert 0.5 < float(m.group(5)) < 0.9, out  # unit-amplitude sines: RMS ~0.71
    # ~0.6 s at 250 Hz: at least a fifth of it on a loaded machine; one window per wake-up,
    # never more windows than samples; each window covers a second, so nothing is skipped
    assert new >= 30 and 1 <= windows <= new and skipped == 0 and lost == 0, out


def check_marker_consumer(tmp_path: Path, sup: Supervised) -> None:
    out = run_supervised("marker_consumer.py", sup, sup.markers, "1.5", tmp_path)  # 1 marker/s
    assert f"listening to '{sup.markers}' (string, 1 channel)" in out, out
    markers = re.findall(r"marker '(\w+)' at t=", out)
    assert markers and set(markers) <= {"trial_start", "stimulus", "response"}, out
    assert f"done: {len(markers)} markers" in out, out


def check_bandpower_worker(tmp_path: Path, sup: Supervised) -> None:
    # standalone: the worker target run(ctx) on a view of the shared signal, for 0.6 s;
    # it computes a window once the ring holds 1 s of data
    from dpshm import SharedStreamView

    with SharedStreamView(sup.signal, namespace=sup.namespace) as view:
        wait_until(lambda: view.head >= view.srate, timeout=TIMEOUT_S)
    r = run_example("bandpower_worker.py", "--stream", sup.signal, "--seconds", "0.6",
                    cwd=tmp_path, env=sup.env)  # fmt: skip
    m = re.search(r"band power worker bandpower-standalone published (\d+) windows", r.stderr)
    assert m and int(m.group(1)) >= 1, r.stderr


def check_epoch_worker(tmp_path: Path, sup: Supervised) -> None:
    out = tmp_path / "epochs.npz"
    r = run_example("epoch_worker.py", "--signal", sup.signal, "--markers", sup.markers,
                    "--seconds", "2.0", "--out", str(out), cwd=tmp_path, env=sup.env)  # fmt: skip
    m = re.search(r"epoch worker epochs-standalone collected (\d+) epochs", r.stderr)
    assert m and int(m.group(1)) >= 1, r.stderr  # one marker per second, 0.5 s after each
    import numpy as np

    with np.load(out) as z:
        assert z["epochs"].shape[0] == int(m.group(1)) and z["epochs"].shape[2] == 4
        assert set(z["labels"]) <= {"trial_start", "stimulus", "response"}


SUPERVISED: dict[str, Callable[[Path, Supervised], None]] = {
    "bandpower_worker.py": check_bandpower_worker,
    "closed_loop.py": check_closed_loop,
    "epoch_worker.py": check_epoch_worker,
    "consumer.py": check_consumer,
    "marker_consumer.py": check_marker_consumer,
    "waiting_consumer.py": check_waiting_consumer,
}

EXAMPLES: dict[str, Callable[[Path, str], None]] = {
    "dareplane_module.py": check_dareplane_module,
    "event_loop.py": check_event_loop,
    "log_forwarding.py": check_log_forwarding,
    "ring_demo.py": check_ring_demo,
    "stream_watcher.py": check_stream_watcher,
}
LSL_EXAMPLES = {"stream_watcher.py"}  # use real LSL outlets on loopback


def test_every_example_is_exercised() -> None:
    scripts = {p.name for p in EXAMPLES_DIR.glob("*.py")}
    missing = sorted(scripts - set(EXAMPLES) - set(SUPERVISED))
    assert not missing, f"examples without a run in tests/test_examples.py: {missing}"
    gone = sorted((set(EXAMPLES) | set(SUPERVISED)) - scripts)
    assert not gone, f"tests/test_examples.py lists examples that do not exist: {gone}"


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=pytest.mark.lsl) if s in LSL_EXAMPLES else s for s in sorted(EXAMPLES)],
)
def test_example_runs(script: str, tmp_path: Path, unique_name: str) -> None:
    EXAMPLES[script](tmp_path, unique_name)


@pytest.mark.lsl
@pytest.mark.parametrize("script", sorted(SUPERVISED))
def test_supervised_example_runs(script: str, tmp_path: Path, supervised: Supervised) -> None:
    SUPERVISED[script](tmp_path, supervised)
