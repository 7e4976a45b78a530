"""glibc malloc tuning (gpudeblur/_allocator.py): what it changes, and when it changes nothing."""

import os
import platform
import re
import subprocess
import sys

import pytest

from gpudeblur import _allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# faults per fresh 16 MB array, after ``tune`` (a Python expression) ran in a new process
_FAULTS = """
import resource, sys, numpy as np
from gpudeblur import _allocator
applied = {tune}
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(4 << 20, np.float32); del a
f0 = faults()
for _ in range(10):
    a = np.ones(4 << 20, np.float32); del a
print(applied, (faults() - f0) / 10, _allocator.allocator_state())
"""


def _run(code, **env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", _allocator.TUNE_ENV_VAR,
                        _allocator.HUGEPAGE_ENV_VAR)}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_tuned_heap_reuses_large_arrays():
    """After tuning, a freed 16 MB array's memory serves the next one: no page faults."""
    applied, faults, state = _run(_FAULTS.format(tune="_allocator.tune_cpu_allocator()")).split(" ", 2)
    assert applied == "True" and state.startswith("tuned")
    assert float(faults) < 1.0


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_user_settings_are_kept():
    out = _run(_FAULTS.format(tune="_allocator.tune_cpu_allocator()"), MALLOC_TRIM_THRESHOLD_="131072")
    applied, _faults, state = out.split(" ", 2)
    assert applied == "False" and state.startswith("user's")
    out = _run(_FAULTS.format(tune="_allocator.tune_cpu_allocator()"), GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536")
    assert out.split(" ", 2)[0] == "False"
    # an unrelated malloc tunable does not stop it
    out = _run(_FAULTS.format(tune="_allocator.tune_cpu_allocator()"), GLIBC_TUNABLES="glibc.malloc.tcache_count=0")
    assert out.split(" ", 2)[0] == "True"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
@pytest.mark.parametrize("value,applied", [("0", "False"), ("off", "False"), ("1", "True"), ("", "True"), (" Yes", "True")])
def test_cli_switch(value, applied):
    out = _run(_FAULTS.format(tune="_allocator.tune_for_cli()"), **{_allocator.TUNE_ENV_VAR: value})
    assert out.split(" ", 2)[0] == applied


def test_cli_switch_refuses_a_value_that_says_neither():
    """``GPUDEBLUR_TUNE_MALLOC=abc`` was taken for "on": now a one-line error and exit 2, before any
    work, as for the other variables; the allocator is left alone."""
    code = "import sys; from gpudeblur.cli import entry; sys.argv = ['gpudeblur', 'info', '--backend', 'cpu']; sys.exit(entry())"
    env = {k: v for k, v in os.environ.items() if k != _allocator.TUNE_ENV_VAR}
    env[_allocator.TUNE_ENV_VAR] = "abc"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 2 and not out.stdout
    assert out.stderr.strip() == ("gpudeblur: error: GPUDEBLUR_TUNE_MALLOC must be 1/on/yes/true or 0/off/no/false, "
                                  "got 'abc'")


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_command_line_applies_it():
    """The ``gpudeblur`` command tunes before it runs (``info`` shows the state);
    ``cli.main`` called from a program leaves that program's allocator alone."""
    code = "import sys; from gpudeblur.cli import entry; sys.argv = ['gpudeblur', 'info', '--backend', 'cpu']; sys.exit(entry())"
    assert re.search(r"^malloc\s+tuned \(mmap threshold", _run(code), re.M)
    assert re.search(r"^malloc\s+glibc defaults \(GPUDEBLUR_TUNE_MALLOC=0\)", _run(code, **{_allocator.TUNE_ENV_VAR: "0"}), re.M)
    embedded = "import sys; from gpudeblur.cli import main; sys.exit(main(['info', '--backend', 'cpu']))"
    assert re.search(r"^malloc\s+glibc defaults$", _run(embedded), re.M)


def test_console_script_is_the_entry():
    from conftest import ROOT

    assert re.search(r'^gpudeblur = "gpudeblur\.cli:entry"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert "entry()" in (ROOT / "gpudeblur" / "__main__.py").read_text()


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(_allocator.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(_allocator, "_state", "glibc defaults")
    assert _allocator.tune_cpu_allocator(numpy_hugepages=True) is False  # (True: leave this process's NumPy be)
    assert _allocator.allocator_state().startswith("not glibc")


@pytest.mark.parametrize("kw", [{"mmap_threshold": 0}, {"trim_threshold": -1}, {"mmap_threshold": 1.5},
                                {"trim_threshold": True}])
def test_bad_thresholds(kw):
    with pytest.raises(ValueError, match="positive integer"):
        _allocator.tune_cpu_allocator(**kw)


# NumPy's huge-page advice after ``tune`` ran: ``_set_madvise_hugepage`` returns the previous setting
_HUGEPAGE = """
from gpudeblur import _allocator
try:
    from numpy._core.multiarray import _set_madvise_hugepage
except ImportError:
    from numpy.core.multiarray import _set_madvise_hugepage
{tune}
print(_set_madvise_hugepage(False), _allocator.allocator_state())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_numpy_hugepage_advice_turned_off():
    """The tuning stops NumPy advising huge pages (slow to fault in on VMs), unless told not to
    or the user set NUMPY_MADVISE_HUGEPAGE; GPUDEBLUR_TUNE_MALLOC=0 leaves NumPy's default."""
    before = _run(_HUGEPAGE.format(tune=""), NUMPY_MADVISE_HUGEPAGE="1")
    assert before.split(" ", 1)[0] == "True"
    after = _run(_HUGEPAGE.format(tune="_allocator.tune_cpu_allocator()"))
    assert after.split(" ", 1)[0] == "False" and after.endswith("; NumPy huge pages off")
    kept = _run(_HUGEPAGE.format(tune="_allocator.tune_cpu_allocator(numpy_hugepages=True)"),
                NUMPY_MADVISE_HUGEPAGE="1")
    assert kept.split(" ", 1)[0] == "True" and "huge pages" not in kept
    user = _run(_HUGEPAGE.format(tune="_allocator.tune_cpu_allocator()"), NUMPY_MADVISE_HUGEPAGE="1")
    assert user.split(" ", 1)[0] == "True" and user.endswith("NumPy huge pages as NUMPY_MADVISE_HUGEPAGE=1")
    cli_off = _run(_HUGEPAGE.format(tune="_allocator.tune_for_cli()"), NUMPY_MADVISE_HUGEPAGE="1",
                   **{_allocator.TUNE_ENV_VAR: "0"})
    assert cli_off.split(" ", 1)[0] == "True"
    cli = _run(_HUGEPAGE.format(tune="_allocator.tune_for_cli()"))
    assert cli.split(" ", 1)[0] == "False"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_command_line_shows_hugepage_state():
    code = "import sys; from gpudeblur.cli import entry; sys.argv = ['gpudeblur', 'info', '--backend', 'cpu']; sys.exit(entry())"
    assert re.search(r"^malloc\s+tuned \(mmap threshold .*\); NumPy huge pages off$", _run(code), re.M)


@pytest.mark.parametrize("value", [None, 0, "no"])
def test_bad_hugepage_flag(value):
    with pytest.raises(ValueError, match="numpy_hugepages must be True or False"):
        _allocator.tune_cpu_allocator(numpy_hugepages=value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_hugepage_advice_off_without_glibc():
    """On a Linux without glibc (musl) the thresholds stay, but NumPy's huge-page advice goes."""
    tune = ("import platform; platform.libc_ver = lambda *a, **k: ('', ''); "
            "applied = _allocator.tune_cpu_allocator(); print(applied, end=' ')")
    out = _run(_HUGEPAGE.format(tune=tune))
    applied, previous, state = out.split(" ", 2)
    assert applied == "False" and previous == "False" and state == "not glibc: unchanged; NumPy huge pages off"
