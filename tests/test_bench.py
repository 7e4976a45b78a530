"""The prepared GPU session (bench/gpu_session.py) stays runnable: every step's
command line is accepted by its bench script, and the runner writes its logs
and summary. (GPU time is too rare to discover a renamed option there.)"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

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
    assert out.count(": ok (") == 2 * len(benches) >= 16  # as run, and as rehearsed
    # every bench step is rehearsed at a small size (a new one would run at full size on CI's CPU)
    assert set(gpu_session.REHEARSAL) == {s[0] for s in benches}


def test_rehearsal_runs_steps_on_the_cupy_standin(gpu_session, tmp_path, monkeypatch, capsys):
    """``--rehearse``: the test steps are left out, the others run under the stand-in with the
    rehearsal's options, and a failed step's log tail is printed."""
    probe = "import sys, cupy, gpudeblur as g; print(cupy.__file__, g.get_backend('cuda').name, sys.argv[1:])"
    steps = [("tests-x", ["-m", "pytest", "-q", "tests/nothing"], 30, None),
             ("probe", ["-c", probe, "--size", "3464", "--keep"], 60, None),
             ("broken", ["-c", "print('last words'); raise SystemExit(4)"], 60, None)]
    monkeypatch.setattr(gpu_session, "STEPS", steps)
    monkeypatch.setattr(gpu_session, "REHEARSAL", {"probe": {"--size": "96", "--new": "1"}})
    assert gpu_session.run(tmp_path, budget=120.0, only=None, copy_results=False, rehearse=True) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(r["step"], r["status"]) for r in summary["steps"]] == [("probe", "ok"), ("broken", "failed (exit 4)")]
    log = (tmp_path / "probe.log").read_text()
    assert "cupy_standin" in log and " cuda " in log and "['--size', '96', '--keep', '--new', '1']" in log
    assert "    last words" in capsys.readouterr().out
    assert (tmp_path / "summary.md").read_text().startswith("# Rehearsal of the GPU session on the CuPy stand-in")
    # --only with test steps alone leaves nothing to rehearse: an error, not an empty "ok"
    with pytest.raises(SystemExit) as exc:
        gpu_session.main(["--rehearse", "--only", "tests-x", "--out", str(tmp_path / "none")])
    assert exc.value.code == 2 and "no bench step left to rehearse" in capsys.readouterr().err


def test_standin_activation_runs_scripts_modules_and_code_as_python_does(tmp_path):
    """``standin_activate.py SCRIPT|-m MODULE|-c CODE``: the stand-in is CuPy, the arguments and the
    script's or current folder on sys.path are as ``python`` gives them."""
    import subprocess
    import sys

    activate = Path(__file__).resolve().parent / "cupy_standin" / "standin_activate.py"
    (tmp_path / "helper_mod.py").write_text("X = 7\n")
    body = ("import sys, cupy, helper_mod\n"
            "print('standin' if 'cupy_standin' in cupy.__file__ else 'real', helper_mod.X, sys.argv[1:], __name__)\n")
    (tmp_path / "prog.py").write_text(body)
    runs = {"script": [str(tmp_path / "prog.py"), "a", "--b"], "module": ["-m", "prog", "a", "--b"],
            "code": ["-c", body, "a", "--b"]}
    for what, argv in runs.items():
        res = subprocess.run([sys.executable, str(activate), *argv], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, (what, res.stderr)
        assert res.stdout.strip() == "standin 7 ['a', '--b'] __main__", (what, res.stdout)


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


def test_runner_kills_the_whole_step_and_stops_without_cuda(gpu_session, tmp_path, monkeypatch):
    """A timed-out step's subprocesses die with it (they would skew the next timings), and a failed CUDA check
    stops the session instead of letting later steps 'pass' on the CPU."""
    import time

    flag = tmp_path / "grandchild_alive"
    grandchild = f"import time; time.sleep(3); open({str(flag)!r}, 'w').write('x')"
    child = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(30)"
    steps = [("hang", ["-c", child], 1, None), ("cuda-check", ["-c", "print('no CUDA device'); raise SystemExit(3)"], 30, None),
             ("after", ["-c", "pass"], 30, None)]
    monkeypatch.setattr(gpu_session, "STEPS", steps)
    assert gpu_session.run(tmp_path, budget=60.0, only=None, copy_results=False) == 1
    time.sleep(4)
    assert not flag.exists()  # the grandchild was killed with its group
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {r["step"]: r["status"] for r in summary["steps"]}
    assert status["hang"].startswith("timed out") and status["cuda-check"] == "failed (exit 3)"
    assert status["after"].startswith("skipped (no working CUDA device")
    assert summary["device"] == "no CUDA device"


def test_runner_keeps_its_summary_when_killed(gpu_session, tmp_path):
    """An outer time limit (SIGTERM) must not lose the summary of the steps that finished."""
    import signal
    import subprocess
    import sys
    import time

    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import gpu_session as g; "
              "g.STEPS = [('quick', ['-c', 'pass'], 30, None), ('long', ['-c', 'import time; time.sleep(60)'], 90, None)]; "
              f"raise SystemExit(g.run(__import__('pathlib').Path({str(tmp_path)!r}), 120.0, None, False))")
    p = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = tmp_path / "summary.json"
        if s.exists() and '"running"' in s.read_text() and '"ok"' in s.read_text():
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 130
    status = {r["step"]: r["status"] for r in json.loads((tmp_path / "summary.json").read_text())["steps"]}
    assert status == {"quick": "ok", "long": "interrupted (SIGTERM)"}
    assert "| quick | ok |" in (tmp_path / "summary.md").read_text()


def test_labeling_bench_and_profile_run_small(monkeypatch, tmp_path):
    """The labeling bench (with its segmentation part) and the labeling profile run end to
    end on a small CPU problem: a GPU step must not be the first to run their code (session
    19's GPU call found bench_labeling's segmentation map refused for negative radii)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bl = importlib.import_module("bench_labeling")
    results, rows = bl.bench_size(24, 0.5, ["cpu"], ["primal-dual"], 0.0, 50, 1e-2, True)
    methods = [r["method"] for r in results]
    assert "segment primal-dual" in methods and "primal-dual" in methods
    assert all(r["time_s"] >= 0 for r in results) and len(rows) == len(results)
    prof = importlib.import_module("profile_labeling")
    assert prof.main(["--backend", "cpu", "--size", "40", "--problem", "planted", "--repeats", "2",
                      "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("labeling-profile-40-*.json")
    payload = json.loads(js.read_text())
    solves = [p for p in payload["phases"] if p["phase"] == "_primal_dual"]
    assert solves and all(p["iterations"] > 0 for p in solves)
    assert {"lifted_dual", "lifted_primal_fused"} <= set(payload["kernels"])


def test_blurmap_bench_labeling_budgets_run_small(monkeypatch, tmp_path):
    """``bench_blurmap --labeling-budgets`` (the GPU step that times the labeling per tile layout)
    runs end to end on the CPU: a budget below one tile's need splits the problem into tiles."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bb = importlib.import_module("bench_blurmap")
    assert bb.main(["--skip-fig8", "--skip-cuhk", "--timing-size", "160", "--time-labeling",
                    "--labeling-budgets", "0.08", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("blurmap-*.json")
    t = json.loads(js.read_text())["timing"]
    (row,) = t["labeling_budgets"]
    assert row["budget_gib"] == 0.08 and row["tiles"] >= 2 and len(row["tile_label_iterations"]) == row["tiles"]
    assert row["fine_iterations"] > 0 and row["seconds"] > 0
    assert t["labeling"].get("tiles", 1) == 1  # the default budget holds 160² in one tile
    for bad in ("0,1", "nan", "inf", "1e-12", "x"):
        with pytest.raises(SystemExit):
            bb.build_parser().parse_args(["--labeling-budgets", bad])
    # a square side beyond the 512² photo is a resized photo, not a crop that would not match its map
    assert [bb._timing_size(v) for v in ("160", "512", "1000", "600x800")] == [160, 512, (1000, 1000), (600, 800)]


def test_fft_bench_runs_small(monkeypatch, tmp_path):
    """``bench_fft`` times both FFT libraries on a case and writes its table."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bf = importlib.import_module("bench_fft")
    assert bf.main(["--cases", "grey-600", "--repeats", "2", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("fft-*.json")
    res = json.loads(js.read_text())["results"]
    assert [r["transform"] for r in res] == ["rfft2", "irfft2"]
    assert all(r["ducc0"]["median_s"] > 0 and r["scipy"]["median_s"] > 0 for r in res)
    assert "ducc0" in json.loads(js.read_text())["machine"]["versions"]


def test_compile_bench_runs_small(monkeypatch, tmp_path):
    """``bench_compile`` runs a job in fresh processes on an empty Numba cache, records the
    compile of each kernel in the cold run, and the cached run finds them compiled."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bc = importlib.import_module("bench_compile")
    assert bc.main(["--jobs", "sv-admm", "--size", "64", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("compile-*.json")
    (res,) = json.loads(js.read_text())["results"]
    assert res["job"] == "sv-admm"
    assert {"admm_tv_dual", "admm_tv_rhs"} <= {k.rsplit(".", 1)[-1] for k in res["compile_s"]}
    assert res["cold_median_s"] > res["cached_median_s"] > 0 and res["warm_median_s"] > 0
    assert sum(res["compile_s"].values()) > 0
    assert res["compiled_again_s"] == {}  # the second process loaded every kernel from the cache


def test_large_bench_traces_stage_memory(monkeypatch, tmp_path):
    """``bench_large --trace-memory`` runs end to end on a small CPU scene and reports each
    stage's traced peak (the deblur stage holds at least the image's spectrum); the GPU refuses it."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bl = importlib.import_module("bench_large")
    assert bl.main(["--size", "192", "--mult", "1", "--images", "camera", "--no-true-map", "--trace-memory",
                    "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("large-192-*.json")
    rows = json.loads(js.read_text())["rows"]
    assert [r["map"] for r in rows] == ["layered", "ramp"]
    image_gb = 192 * 192 * 3 * 4 / 1e9
    for r in rows:
        peaks = r["stage_peak_gb"]
        assert {"blur map", "edge cap", "radius check"} <= set(peaks) and any(k.startswith("deblur") for k in peaks)
        assert all(v > image_gb for k, v in peaks.items() if k != "start")
    assert "Traced peak" in next(tmp_path.glob("large-192-*.md")).read_text()
    with pytest.raises(SystemExit):
        bl.main(["--trace-memory", "--backend", "cuda"])


def test_deconv_jpeg_bench_runs(monkeypatch, tmp_path):
    """``bench_deconv_jpeg`` runs end to end on one photo; on its JPEGs the compression error lifts ``wiener`` above
    generalized cross-validation in every case (the bench's claim, on a small scale)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bd = importlib.import_module("bench_deconv_jpeg")
    assert bd.main(["--images", "camera", "--qualities", "75,101", "--no-best", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("deconv-jpeg-*.json")
    rows = json.loads(js.read_text())["rows"]
    assert len(rows) == 2 * len(bd.CASES)
    for r in rows:
        assert ("wiener_jpeg" in r) == (r["quality"] == 75) == (r["estimate"] is not None)
        if r["quality"] == 75:
            assert r["wiener_jpeg"] > r["wiener_default"] + 0.5 and r["admm_jpeg"] > r["admm_default"]
    assert "Mean PSNR" in next(tmp_path.glob("deconv-jpeg-*.md")).read_text()
    with pytest.raises(SystemExit):
        bd.main(["--images", "nosuch"])



def test_tv_channels_bench_runs(monkeypatch, tmp_path):
    """``bench_tv_channels`` runs end to end on small squares: every case has its three results, and
    the colour TV beats the per-channel TV on average (the bench's claim, on a small scale)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bt = importlib.import_module("bench_tv_channels")
    assert bt.main(["--size", "48", "--iters", "30", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("tv-channels-*.json")
    rows = json.loads(js.read_text())["rows"]
    assert len(rows) == 4 * len(bt.CASES)
    gains = [r["joint"] - r["separate"] for r in rows]
    assert sum(gains) / len(gains) > 0.2, gains
    assert "joint − separate" in next(tmp_path.glob("tv-channels-*.md")).read_text()
    with pytest.raises(SystemExit):
        bt.main(["--size", "8"])


def test_deconv_psfs_bench_runs(monkeypatch, tmp_path):
    """``bench_deconv_psfs`` runs end to end on small squares: every photo × PSF has each method's result,
    the PSFs are sorted into mirror-symmetric and not, and every method gains over its input on the
    slanted motion blurs too (before the blurred padding Wiener lost 3.5 dB on the worst of them)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bd = importlib.import_module("bench_deconv_psfs")
    assert bd.main(["--size", "96", "--iters", "30", "--out", str(tmp_path)]) == 0
    (js,) = tmp_path.glob("deconv-psfs-*.json")
    rows = json.loads(js.read_text())["rows"]
    assert len(rows) == 4 * len(bd.PSFS)
    assert {r["psf"] for r in rows if not r["mirror_symmetric"]} == {"motion 9 @ 45°", "motion 11 @ 120°",
                                                                      "motion 15 @ 20°"}
    for r in rows:
        for m in bd.METHODS:
            if m == "wiener" and r["psf"].startswith("motion"):
                continue  # its GCV balance is unreliable on motion blurs at 96² (below)
            assert r[m] > r["input"], (r["image"], r["psf"], m)
    slanted = [r for r in rows if r["psf"] in ("motion 9 @ 45°", "motion 11 @ 120°")]
    assert all(r["wiener"] > r["input"] for r in slanted)
    assert "slanted motion blurs" in next(tmp_path.glob("deconv-psfs-*.md")).read_text()
    with pytest.raises(SystemExit):
        bd.main(["--size", "16"])


def test_allinfocus_bench_noisy_section_runs(monkeypatch, tmp_path):
    """``bench_allinfocus``'s noisy section runs end to end on one small photo (a blurred and a sharp scene) and a
    sharp photo of the no-blur rows, and at
    σ = 0.05 ``sv-admm`` beats the input (it fell 3 dB below before the TV weight followed the noise)."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    ba = importlib.import_module("bench_allinfocus")
    images, maps = ba.images, ba.maps
    monkeypatch.setattr(ba, "images", lambda size: dict(list(images(size).items())[:1]))
    monkeypatch.setattr(ba, "maps", lambda size: {"layered": maps(size)["layered"]})
    monkeypatch.setattr(ba, "SHARP_PHOTOS", ("astronaut", "rocket"))  # the first photo's scenes, then rocket sharp
    ba.main(["--size", "96", "--skip-quality", "--skip-no-blur", "--skip-highlights", "--skip-jpeg", "--skip-timing",
             "--skip-depth-step", "--noise-sigmas", "0.05", "--out", str(tmp_path)])
    (js,) = tmp_path.glob("allinfocus-*.json")
    rows = json.loads(js.read_text())["noisy"]
    assert [(r["image"], r["map"], r["sigma"]) for r in rows] == [
        ("astronaut", "layered", 0.05), ("astronaut", "sharp", 0.05), ("rocket", "sharp", 0.05)]
    for r in rows:
        assert r["sv-admm_psnr"] > r["input_psnr"] and r["sv-admm_lam"] == pytest.approx(0.1 * r["noise_sigma"])
        assert r["fast_psnr"] > r["input_psnr"] and r["fast_lam"] == pytest.approx(1.5 * r["noise_sigma"])
    assert "Noisy input" in next(tmp_path.glob("allinfocus-*.md")).read_text()


def test_allinfocus_bench_depth_step_section(monkeypatch):
    """``bench_allinfocus``'s depth-step rows on one small photo: both modes with the true map
    deblur the background beside the sharp subject (the plain per-radius blend and sv-admm's
    old start fell below the input there), and the table has a mean row per radius."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    ba = importlib.import_module("bench_allinfocus")
    images = ba.images
    monkeypatch.setattr(ba, "images", lambda size: dict(list(images(size).items())[:1]))
    rows = ba.depth_step(128, ["fast", "sv-admm"], radii=(10.0,))
    (r,) = rows
    assert (r["image"], r["radius"]) == ("astronaut", 10.0)
    for mode in ("fast", "sv-admm"):
        assert r[f"{mode}_true_bg_psnr"] > r["input_bg_psnr"] + 2, r
        assert r[f"{mode}_est_psnr"] > r["input_psnr"], r
    text = "\n".join(ba.depth_step_markdown(rows, ["fast", "sv-admm"]))
    assert "Depth step" in text and "**mean**" in text
