"""The prepared GPU session (bench/gpu_session.py) stays runnable: every step's
command line is accepted by its bench script, and the runner writes its logs
and summary. (GPU time is too rare to discover a renamed option there.)"""

from __future__ import annotations

import importlib
import json

import pytest

from conftest import ROOT

pytest.importorskip("skimage")  # the bench scripts' images


@pytest.fixture()
def gpu_session(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module("gpu_session")


def test_every_step_parses(gpu_session, capsys):
    assert gpu_session.dry_run() == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    benches = [s for s in gpu_session.STEPS if s[3] is not None]
    assert out.count(": ok (") == len(benches) >= 8


def test_a_bad_option_is_caught(gpu_session, monkeypatch, capsys):
    steps = list(gpu_session.STEPS) + [("bad", ["bench/bench_blurmap.py", "--no-such-option"], 10, "bench_blurmap")]
    monkeypatch.setattr(gpu_session, "STEPS", steps)
    assert gpu_session.dry_run() == 1
    assert "bad: REJECTED by bench_blurmap" in capsys.readouterr().out


def test_runner_writes_logs_and_summary(gpu_session, tmp_path, monkeypatch):
    steps = [("hello", ["-c", "print('hi')"], 30, None), ("fails", ["-c", "raise SystemExit(3)"], 30, None),
             ("slow", ["-c", "import time; time.sleep(30)"], 1, None), ("late", ["-c", "pass"], 30, None)]
    monkeypatch.setattr(gpu_session, "STEPS", steps)
    rc = gpu_session.run(tmp_path, budget=25.0, only=None, copy_results=False)
    assert rc == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {r["step"]: r["status"] for r in summary["steps"]}
    assert status["hello"] == "ok" and status["fails"] == "failed (exit 3)"
    assert status["slow"].startswith("timed out after 1")
    assert status["late"] == "ok"
    assert "hi" in (tmp_path / "hello.log").read_text()
    assert summary["commit"] and summary["device"]
    assert (tmp_path / "summary.md").read_text().startswith("# GPU session")
    # no step starts with less than 20 s of budget left
    assert gpu_session.run(tmp_path / "b", budget=10.0, only=None, copy_results=False) == 1
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert {r["status"] for r in summary["steps"]} == {"not started (budget spent)"}
