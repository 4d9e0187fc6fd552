"""Every size and interval is bounded, in the TOML file and on the command line
alike, by one check per field; `dpshm up` refuses a bad value in one line before
it creates any ring or opens any port."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from helpers import ROOT

from dpshm import config as C
from dpshm.config import BOUNDS, check_value, load_config, parse_toml
from dpshm.errors import ConfigError

# where each bounded key lives in the TOML file
TABLE = {
    "buffer_s": "supervisor",
    "irregular_samples": "supervisor",
    "string_width": "supervisor",
    "resolve_interval_s": "supervisor",
    "max_subscribers": "supervisor",
    "port": "server",
    "max_restarts": "workers.w",
    "backoff_s": "workers.w",
}


def _bad_values(key):
    b = BOUNDS[key]
    bad = [b.lo - 1, b.hi + 1, float("nan"), float("inf"), -float("inf")]
    if b.kind is float:
        bad += [b.lo / 10 if b.lo > 0 else -1e-9, 1e12]
    return bad


def test_every_bounded_key_is_in_the_table():
    assert set(TABLE) == set(BOUNDS)


@pytest.mark.parametrize("key", sorted(BOUNDS))
def test_toml_and_flag_share_one_check(key):
    b = BOUNDS[key]
    table = TABLE[key]
    extra = 'target = "m:f"\n' if table.startswith("workers") else ""
    for value in _bad_values(key):
        lit = {math.inf: "inf", -math.inf: "-inf"}.get(value, repr(value))
        if isinstance(value, float) and math.isnan(value):
            lit = "nan"
        text = f"[{table}]\n{extra}{key} = {lit}\n"
        with pytest.raises(ConfigError) as from_file:
            parse_toml(text, "lab.toml")
        msg = str(from_file.value)
        assert f"'{table}.{key}'" in msg and "lab.toml, line" in msg
        assert f"within {b.describe()}" in msg and "\n" not in msg
        if b.flag is not None:  # the flag goes through the same function
            override = "server_port" if key == "port" else key
            with pytest.raises(ConfigError) as from_flag:
                load_config(overrides={override: value}, env={})
            assert str(from_flag.value).startswith(f"{b.flag} must be")
            assert f"within {b.describe()}" in str(from_flag.value)
    # the bounds themselves are accepted, in the file and as flags
    for value in (b.lo, b.hi):
        lit = str(int(value)) if b.kind is int else repr(float(value))
        assert check_value(key, b.kind(value)) == value
        parse_toml(f"[{table}]\n{extra}{key} = {lit}\n", "lab.toml")


def test_wrong_types_are_refused():
    with pytest.raises(ConfigError, match=r"must be an integer within 16\.\.1000000 samples"):
        check_value("irregular_samples", 100.5)
    with pytest.raises(ConfigError, match="must be a number"):
        check_value("buffer_s", True)
    with pytest.raises(ConfigError, match="must be a number"):
        check_value("buffer_s", "10")


def test_inlet_queue_is_bounded_independently_of_the_ring():
    from dpshm.shm.supervisor import Supervisor

    big = Supervisor(C.SupervisorConfig(buffer_s=3600.0))
    small = Supervisor(C.SupervisorConfig(buffer_s=0.1))
    assert big.inlet_buflen() == C.MAX_INLET_BUFLEN_S == 360
    assert small.inlet_buflen() == 2
    assert big.config.buffer_for(C.StreamSelector(), 1000.0) == 3_600_000


def _run_up(ns: str, *args: str, config: str | None = None):
    env = {**os.environ, "DPSHM_NAMESPACE": ns, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "dpshm", "up", "-q", "--stream", "none", "--duration", "5", *args]
    if config is not None:
        cmd += ["--config", config]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


BAD_FLAGS = [
    (["--buffer-s", "-5"], "--buffer-s must be within 0.1..3600 s, got -5.0"),
    (["--buffer-s", "nan"], "--buffer-s must be within 0.1..3600 s, got nan"),
    (["--buffer-s", "1e12"], "--buffer-s must be within 0.1..3600 s"),
    (["--resolve-interval-s", "0"], "--resolve-interval-s must be within 0.1..60 s, got 0.0"),
    (["--irregular-samples", "0"], "--irregular-samples must be within 16..1000000 samples"),
    (["--port", "70000"], "--port must be within 0..65535, got 70000"),
    (["--port", "-1"], "--port must be within 0..65535, got -1"),
    (["--max-subscribers", "0"], "--max-subscribers must be within 1..65536"),
    (["--duration", "nan"], "--duration must be a finite number of seconds > 0, got nan"),
    (["--duration", "-1"], "--duration must be a finite number of seconds > 0, got -1.0"),
]


@pytest.mark.parametrize(("flags", "expected"), BAD_FLAGS, ids=lambda v: " ".join(v)[:30])
def test_bad_flag_is_one_line_and_creates_nothing(unique_name, flags, expected):
    res = _run_up(unique_name, *flags)
    assert res.returncode in (1, 2), res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert expected in lines[0]
    assert not [s for s in os.listdir("/dev/shm") if f"dpshm_{unique_name}." in s]
    from dpshm.shm import registry

    assert registry.read_registry_raw(unique_name) is None


def test_bad_toml_value_is_one_line(unique_name, tmp_path):
    cfg = tmp_path / "lab.toml"
    cfg.write_text("[supervisor]\nbuffer_s = inf\n")
    res = _run_up(unique_name, config=str(cfg))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"dpshm up: error: {cfg}, line 2: 'supervisor.buffer_s' must be within 0.1..3600 s, "
        "got inf."
    )


def test_help_states_the_ranges():
    res = subprocess.run(
        [sys.executable, "-m", "dpshm", "up", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    for needle in ("0.1..3600 s", "16..1000000 samples", "0.1..60 s", "1..65536"):
        assert needle in res.stdout, needle
