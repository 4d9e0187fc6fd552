"""One-line errors on the command line, quiet broken pipes, Ctrl-C during start-up and
`dpshm down` with nothing to stop: each through ``python -m dpshm`` in a subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
from cli_util import ctrl_c, pushing, run_dpshm, spawn_dpshm
from helpers import ROOT
from supervisor_util import Sup, child_env, segments

from dpshm.shm import registry


def _one_line_error(res: subprocess.CompletedProcess, command: str) -> str:
    err = res.stderr.strip()
    assert res.returncode == 1, (res.returncode, res.stdout, err)
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"dpshm {command}: error: "), err
    return err


def test_logserver_on_a_taken_port(unique_name):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_dpshm(unique_name, "logserver", "--host", "127.0.0.1", "--port", str(port))
    err = _one_line_error(res, "logserver")
    assert f"127.0.0.1:{port}" in err and "already in use" in err and "--port" in err


def test_logserver_with_an_unwritable_log_file(unique_name, tmp_path):
    res = run_dpshm(
        unique_name, "logserver", "--port", "0", "--logfile", str(tmp_path / "no" / "x.log")
    )
    err = _one_line_error(res, "logserver")
    assert f"cannot write the log file '{tmp_path / 'no' / 'x.log'}'" in err and "--logfile" in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--rate", "0"], "rate (--rate) must be > 0"),
        (["--rate", "nan"], "got nan"),
        (["--rate", "-250"], "got -250.0"),
        (["--rate", "1e9"], "<= 100000 Hz"),
        (["--channels", "0"], "channels (--channels) must be 1 .. 1024, got 0"),
        (["--channels", "5000"], "got 5000"),
        (["--name", ""], "name (--name) must not be empty"),
        (["--name", "x", "--marker-name", "x"], "give --marker-name another name"),
        (["--duration", "-1"], "--duration must be a number of seconds >= 0"),
    ],
)
def test_mock_refuses_nonsense_in_one_line(unique_name, flags, says):
    res = run_dpshm(unique_name, "mock", *flags, timeout=30)  # without the check: runs on
    assert says in _one_line_error(res, "mock")


def test_demo_refuses_a_zero_rate_before_starting_anything(unique_name):
    res = run_dpshm(unique_name, "demo", "--rate", "0", "--duration", "1")
    assert "rate (--rate) must be > 0" in _one_line_error(res, "demo")
    assert segments(unique_name) == []


def test_demo_filter_without_scipy_says_so_before_starting_anything(unique_name):
    code = (  # scipy hidden, as on a machine that installed dpshm without [filters]
        "import sys; sys.modules['scipy'] = None\n"
        "from dpshm.cli.main import main\n"
        "sys.exit(main(['demo', '--filter', '--duration', '3']))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=child_env(unique_name), capture_output=True,
        text=True, timeout=60, cwd=str(ROOT),
    )  # fmt: skip
    err = _one_line_error(res, "demo")
    assert "need scipy" in err and "pip install 'dpshm[filters]'" in err
    assert res.stdout == "" and segments(unique_name) == []  # nothing started


def test_ls_json_into_a_closed_pipe_exits_quietly(procs):
    ns, started = procs
    sup = Sup(ns, f"{ns}-none")
    started.append(sup)
    sup.ready()
    reader_gone = subprocess.Popen(
        [sys.executable, "-m", "dpshm", "ls", "--json"], env=child_env(ns),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT),
    )  # fmt: skip
    reader_gone.stdout.close()  # like `| head -0`: nobody reads
    _, err = reader_gone.communicate(timeout=60)
    assert err.decode() == "" and reader_gone.returncode == 141, err.decode()


@pytest.mark.lsl
def test_tail_into_head_exits_quietly(procs, outlets):
    ns, started = procs
    name = f"{ns}-sig"
    out = outlets.make(name=name, n_channels=2, srate=200.0)
    sup = Sup(ns, name)
    started.append(sup)
    sup.entry(name)
    with pushing(out, 2, 200.0):
        res = subprocess.run(
            ["bash", "-c", f"{sys.executable} -m dpshm tail {name} --duration 30 --rate 50 "
             "| head -3; echo \"tail exit ${PIPESTATUS[0]}\" >&2"],
            env=child_env(ns), capture_output=True, text=True, timeout=60, cwd=str(ROOT),
        )  # fmt: skip
    assert len(res.stdout.splitlines()) == 3, res.stdout
    assert res.stderr.strip() == "tail exit 141", res.stderr


def _interrupt_start(ns: str, args: list[str], delay_s: float) -> tuple[int, str]:
    """Start ``dpshm ARGS``, send Ctrl-C ``delay_s`` after the command line's code loads.

    ``-X importtime`` reports each import as it completes: once ``dpshm.cli`` is
    imported, ``python -m dpshm`` runs our code (a Ctrl-C while the interpreter
    itself starts is Python's business, not ours). Returns exit code and output.
    """
    proc = spawn_dpshm(ns, *args, python_flags=["-X", "importtime"])
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True),
        threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True),
    ]
    for r in readers:
        r.start()

    def in_our_code() -> bool:
        if any(e.split("|")[-1].strip() == "dpshm.cli" for e in err):
            time.sleep(delay_s)  # the point of the test: a moment inside the start-up
            return True
        return False

    hung = False
    try:
        ctrl_c(proc, in_our_code, collect=False)
    except subprocess.TimeoutExpired:
        hung = True
    finally:
        for r in readers:
            r.join(10)
    said = "".join(out + [e for e in err if not e.startswith("import time:")])
    assert not hung, f"no exit within 30 s of the Ctrl-C; its threads (faulthandler):\n{said}"
    return proc.returncode, said


def _start_args(ns: str, command: str) -> list[str]:
    """The arguments of a ``dpshm up`` / ``dpshm demo`` that touches nobody else's streams."""
    if command == "up":
        return ["up", "--stream", f"{ns}-none", "--quiet"]
    return ["demo", "--name", f"{ns}-m", "--marker-name", f"{ns}-k"]


@pytest.mark.lsl
@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.15, 0.3, 0.6])
@pytest.mark.parametrize("command", ["up", "demo"])
def test_ctrl_c_during_start_up(unique_name, command, delay_s):
    rc, out = _interrupt_start(unique_name, _start_args(unique_name, command), delay_s)
    # 130: our handler ran; -2: Python re-raised SIGINT on its way out (no handler yet):
    # both are what a shell shows as Ctrl-C, and neither may print a traceback
    assert rc in (0, 130, -2) and "Traceback" not in out and "Error" not in out, (rc, out)
    assert segments(unique_name) == []
    assert registry.read_registry_raw(unique_name) is None


# Runs the command line with a Ctrl-C sent at the moment MODULE is imported (an import
# hook; it says "tripped" on stderr first), then RUN: main() or `python -m dpshm`.
_CTRL_C_ON_IMPORT = """
import os, signal, sys
class Trip:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            print("tripped", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGINT)
        return None
from dpshm.cli.main import main
sys.meta_path.insert(0, Trip())
{run}
"""
_RUN_MAIN = "sys.exit(main(sys.argv[1:]))"
_RUN_MODULE = "import runpy; runpy.run_module('dpshm', run_name='__main__')"


def _ctrl_c_on_import(
    ns: str, module: str, args: list[str], run: str = _RUN_MAIN
) -> subprocess.CompletedProcess:
    code = _CTRL_C_ON_IMPORT.format(module=module, run=run)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=child_env(ns),
        capture_output=True, text=True, timeout=60, cwd=str(ROOT),
    )  # fmt: skip


# A Ctrl-C inside the C initialisation of xml.etree's accelerator (its import of
# pyexpat): CPython 3.10-3.12 lose the KeyboardInterrupt there, and `dpshm demo` ran
# on for ever (CI saw it hang; 3.13 raises it). The hook makes that moment certain.
@pytest.mark.lsl
@pytest.mark.parametrize("command", ["up", "demo"])
def test_ctrl_c_that_python_loses_in_an_import_still_stops_the_command(unique_name, command):
    res = _ctrl_c_on_import(unique_name, "pyexpat", _start_args(unique_name, command))
    out = res.stdout + res.stderr
    assert res.returncode in (0, 130) and "Traceback" not in out, (res.returncode, out)
    assert segments(unique_name) == []
    assert registry.read_registry_raw(unique_name) is None


# A Ctrl-C while main() imports what installs its Ctrl-C handler: the import of
# dpshm.cli._common takes milliseconds, and a Ctrl-C there printed a traceback.
@pytest.mark.parametrize("run", [_RUN_MAIN, _RUN_MODULE], ids=["main", "python -m dpshm"])
def test_ctrl_c_before_main_installed_its_handler_exits_130_quietly(unique_name, run):
    res = _ctrl_c_on_import(unique_name, "dpshm.cli._common", _start_args(unique_name, "up"), run)
    assert res.stderr.startswith("tripped"), res.stderr  # the Ctrl-C came at that moment
    assert res.returncode == 130 and "Traceback" not in res.stderr, (res.returncode, res.stderr)
    assert registry.read_registry_raw(unique_name) is None


@pytest.mark.lsl
def test_ctrl_c_before_the_demo_consumer_attached(unique_name):
    """Ctrl-C right after the demo's first line: its consumer has not found the stream."""
    proc = spawn_dpshm(
        unique_name, "demo", "--name", f"{unique_name}-m", "--marker-name", f"{unique_name}-k"
    )
    first = proc.stdout.readline()
    assert first.startswith("dpshm demo:"), first
    out, err = ctrl_c(proc, lambda: True)
    out += err
    assert proc.returncode in (0, 130) and "Traceback" not in out, out
    assert segments(unique_name) == []


def test_down_with_nothing_running(unique_name):
    res = run_dpshm(unique_name, "down")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("nothing to stop: no dpshm supervisor runs on namespace")
    assert unique_name in res.stdout and res.stderr == ""
