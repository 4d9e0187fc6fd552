"""`dpshm demo` says what its numbers mean: every pushed sample is accounted for
(before the supervisor connected, before the consumer attached, read, lost), also
when Ctrl-C ends it."""

from __future__ import annotations

import re

import pytest
from cli_util import ctrl_c, run_dpshm, spawn_dpshm
from supervisor_util import segments

from dpshm.shm import registry

pytestmark = pytest.mark.lsl

SUMMARY = re.compile(
    r"demo done: (\d+) pushed, (\d+) before the supervisor connected \(LSL does not replay "
    r"them\), (\d+) shared(?:, (\d+) of them before the consumer attached \(it reads new "
    r"samples\))?; (\d+) read, (\d+) lost\."
)


def _accounted(stdout: str) -> tuple[int, int, int, int, int]:
    match = SUMMARY.search(stdout)
    assert match, stdout
    pushed, before_sup, shared, before_consumer, read, lost = (int(g or 0) for g in match.groups())
    assert pushed == before_sup + shared and shared == before_consumer + read + lost, stdout
    return pushed, before_sup, shared, read, lost


def test_demo_accounts_for_every_pushed_sample(unique_name):
    res = run_dpshm(
        unique_name, "demo", "--duration", "3", "--name", f"{unique_name}-m",
        "--marker-name", f"{unique_name}-k", "--rate", "500",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    _, before_sup, _, read, lost = _accounted(res.stdout.strip().splitlines()[-1])
    # the mock pushes from the start; the supervisor connects after resolving it
    assert before_sup > 0 and read > 500 and lost == 0
    assert segments(unique_name) == []


def test_ctrl_c_ends_the_demo_with_the_figures_still_adding_up(unique_name):
    name = f"{unique_name}-m"
    proc = spawn_dpshm(
        unique_name, "demo", "--name", name, "--marker-name", f"{unique_name}-k", "--rate", "500"
    )

    def sharing() -> bool:
        status = registry.read_status(unique_name) or {"streams": {}}
        return any(s["name"] == name and s.get("head", 0) > 250 for s in status["streams"].values())

    out, err = ctrl_c(proc, sharing)
    assert proc.returncode == 0 and "Traceback" not in err, err
    _, _, shared, read, lost = _accounted(out)
    assert shared > 250 and read > 0 and lost == 0
    assert segments(unique_name) == []
