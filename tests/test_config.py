"""Configuration: TOML, environment and flags; errors name the line and key."""

from __future__ import annotations

import pytest

from dpshm.config import (
    DEFAULT_BUFFER_S,
    StreamSelector,
    SupervisorConfig,
    load_config,
    parse_selector,
    parse_toml,
)
from dpshm.errors import ConfigError

GOOD = """
[supervisor]
namespace = "lab"
buffer_s = 5
transport = "tcp"

[[streams]]
name = "eeg"
buffer_s = 2.5

[[streams]]
type = "Markers"
irregular_samples = 100

[server]
port = 9100

[workers.bp]
target = "pkg.mod:run"
mode = "process"
kwargs = { band = [8, 12] }
restart = "on-failure"
max_restarts = 2
"""


def test_full_document_parses():
    cfg = parse_toml(GOOD, "lab.toml")
    assert cfg.namespace == "lab"
    assert cfg.buffer_s == 5.0
    assert cfg.transport == "tcp"
    assert cfg.streams == (
        StreamSelector(name="eeg", buffer_s=2.5),
        StreamSelector(type="Markers", irregular_samples=100),
    )
    assert cfg.server.port == 9100 and cfg.server.host == "127.0.0.1"
    w = cfg.workers["bp"]
    assert (w.module, w.function, w.mode) == ("pkg.mod", "run", "process")
    assert dict(w.kwargs) == {"band": [8, 12]}
    assert w.restart.policy == "on-failure" and w.restart.max_restarts == 2
    # selection and sizing
    eeg = cfg.selects("eeg", "EEG", "x")
    assert eeg is not None and cfg.buffer_for(eeg, 1000.0) == 2500
    mk = cfg.selects("m", "Markers", "y")
    assert mk is not None and cfg.buffer_for(mk, 0.0) == 100
    assert cfg.selects("other", "EEG", "z") is None


def test_defaults_select_everything():
    cfg = SupervisorConfig()
    sel = cfg.selects("any", "thing", "id")
    assert sel is not None
    assert cfg.buffer_for(sel, 100.0) == int(DEFAULT_BUFFER_S * 100)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[supervisor]\nbuffer_s = -1\n", ["line 2", "supervisor.buffer_s", "0.1..3600 s", "-1"]),
        ("[supervisor]\n\nbufer_s = 3\n", ["line 3", "supervisor.bufer_s", "unknown key"]),
        ("[supervisor]\ntransport = 'udp'\n", ["line 2", "transport", "'udp'", "ipc"]),
        ("[[streams]]\nname = 'a'\n[[streams]]\nbuffer_s = 1\n", ["line 3", "streams[1]"]),
        ("[[streams]]\nname = 3\n", ["line 2", "streams[0].name", "a string"]),
        ("[workers.x]\nmode = 'thread'\n", ["line 1", "workers.x", "target"]),
        ("[workers.x]\ntarget = 'os.system(1)'\n", ["line 2", "workers.x.target", "os.system"]),
        ("[workers.x]\ntarget = 'a:b'\nmode = 'fork'\n", ["line 3", "mode", "'fork'"]),
        ("[server]\nport = 70000\n", ["line 2", "server.port", "70000"]),
        ("[supervisor]\nnamespace = 'a/b'\n", ["line 2", "namespace", "'a/b'"]),
        ("[supervisr]\n", ["line 1", "'supervisr'"]),
        ("[supervisor]\nbuffer_s = = 3\n", ["line 2", "invalid TOML"]),
    ],
)
def test_errors_name_line_and_key(text, needles):
    with pytest.raises(ConfigError) as info:
        parse_toml(text, "cfg.toml")
    msg = str(info.value)
    assert "cfg.toml" in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_precedence_file_env_flags(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[supervisor]\nnamespace = "fromfile"\nbuffer_s = 3\n[server]\nport = 1234\n')
    assert load_config(p, env={}).namespace == "fromfile"
    cfg = load_config(p, env={"DPSHM_NAMESPACE": "fromenv"})
    assert cfg.namespace == "fromenv" and cfg.buffer_s == 3.0
    cfg = load_config(
        None,
        env={"DPSHM_CONFIG": str(p)},
        overrides={"buffer_s": 7.0, "server_port": 99, "streams": [StreamSelector(name="x")]},
    )
    assert (cfg.namespace, cfg.buffer_s, cfg.server.port) == ("fromfile", 7.0, 99)
    assert cfg.streams == (StreamSelector(name="x"),)


def test_missing_file_and_bad_env(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})
    with pytest.raises(ConfigError, match="DPSHM_NAMESPACE"):
        load_config(None, env={"DPSHM_NAMESPACE": "no spaces"})


def test_parse_selector():
    assert parse_selector("eeg") == StreamSelector(name="eeg")
    assert parse_selector("type=EEG,source_id=a1") == StreamSelector(type="EEG", source_id="a1")
    with pytest.raises(ConfigError, match="colour"):
        parse_selector("colour=red")
