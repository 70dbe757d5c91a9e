"""The benchmark scripts still run against the current configs and layers (tiny sizes; the
measurements themselves live in benchmarks/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

HAS_NORSE = importlib.util.find_spec("norse") is not None


@pytest.mark.parametrize("variant", ["eager", "auto", "python", "norse"])
def test_bench_train_builds_and_steps_every_variant(variant):
    if variant == "norse" and not HAS_NORSE:
        pytest.skip("norse is not installed")
    from bench_train import build

    model, batch, shape, classes, T = build(variant, T=3)
    assert T == 3 and classes == 10
    logits = model(torch.rand(2, *shape))
    assert logits.shape == (2, classes)
    logits.sum().backward()


def test_bench_layers_runs_a_case_and_counts_saved_bytes():
    from bench_layers import run_case

    rows = run_case("adex", T=20, B=4, N=32, backends=["eager", "python"], budget_s=0.0)
    by_name = {row[0]: row for row in rows}
    assert {"eager", "python"} <= set(by_name) and ("norse" in by_name) == HAS_NORSE
    assert by_name["python"][3] == pytest.approx(4.0, abs=0.02)  # + a few scalar parameters
    assert by_name["eager"][3] > by_name["python"][3]


def test_bench_layers_times_the_memory_floor_beside_cpp():
    from bench_layers import Copies, run_case

    rows = run_case("adex", T=20, B=4, N=32, backends=["cpp"], budget_s=0.0, norse=False)
    by_name = {row[0]: row for row in rows}
    assert set(by_name) == {"cpp", "memory floor"}
    assert by_name["cpp"][2]["floor"] > 0 and by_name["memory floor"][2]["floor"] == 1.0
    x = torch.rand(3, 2, 5, requires_grad=True)
    out = Copies.apply(x, 1)  # the bytes moved: x in, out and one saved tensor out; then g_x
    out.sum().backward()
    assert torch.equal(out, x) and torch.equal(x.grad, torch.ones_like(x))


def test_bench_recurrent_runs_a_case_against_eager_and_norse():
    from bench_recurrent import matmul_floor, run_case

    rows = run_case("adex", T=20, B=4, F=1, N=16, backends=["eager", "python"], budget_s=0.0,
                    norse=HAS_NORSE)
    by_name = {row[0]: row for row in rows}
    assert {"eager", "python"} <= set(by_name) and ("norse" in by_name) == HAS_NORSE
    assert all(row[5] for row in rows)  # every implementation spikes as eager does
    assert 0 < by_name["python"][4] < 1
    assert by_name["python"][3] < 8 < by_name["eager"][3]  # v_d, plus x and the weights at this size
    assert matmul_floor(T=5, B=4, N=16, repeats=1) > 0


def test_bench_recurrent_load_runs_a_case_beside_a_neighbour_and_stops_it():
    from bench_recurrent_load import neighbours, run_case

    with neighbours("spin", 1) as pause:
        (pid,) = pause.pids
        times = run_case("adex", T=10, B=2, F=1, N=8, pause=pause, rounds=2, budget_s=0.0)
    assert set(times) == {"quiet", "loaded"}
    for by_name in times.values():
        assert set(by_name) == {"python", "cpp", "cpp@1", "cpp@all"}
        assert all(len(ts) == 2 and min(ts) > 0 for ts in by_name.values())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the neighbour is gone


def test_bench_recurrent_floor_table_runs_native_per_step_and_floor():
    from bench_recurrent import floor_rows

    before = os.environ.get("SNN_SPIKE_PRODUCTS")
    rows, rate = floor_rows("lif", T=5, B=4, F=1, N=16, budget_s=0.0, norse=HAS_NORSE, products=("dense", "sparse"))
    assert {"cpp native (dense)", "cpp native (sparse)", "cpp per-step", "floor"} <= set(rows)
    assert ("norse" in rows) == HAS_NORSE and 0 <= rate <= 1
    assert rows["floor"][2] == 1.0 and all(row[0] > 0 and row[4] >= 3 for row in rows.values())
    assert os.environ.get("SNN_SPIKE_PRODUCTS") == before  # the modes are set per call, and restored


def test_bench_recurrent_crossover_times_dense_and_sparse_products(capsys):
    from bench_recurrent import crossover

    crossover("adex", T=6, B=4, sizes=[16], scales=(4.0,), rates=(0.1,), budget_s=0.0)
    tables = capsys.readouterr().out
    assert tables.count("| 16 |") == 2 and "x |" in tables


def test_bench_event_data_runs_every_set_on_tiny_files():
    from bench_event_data import SETS, main

    rows = main(["--quick"])
    assert [r["set"] for r in rows] == list(SETS)
    for r in rows:
        assert r["samples"] > 0 and r["build"] > 0 and r["load"] > 0 and r["step"] > 0


def test_bench_gpu_parses_its_arguments_and_needs_a_gpu(capsys):
    """bench_gpu.py cannot run here (no GPU): it imports, --help works, and without CUDA it exits
    with a message that says so."""
    import bench_gpu

    with pytest.raises(SystemExit) as help_exit:
        bench_gpu.main(["--help"])
    assert help_exit.value.code == 0 and "--sizes" in capsys.readouterr().out
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the benchmark would run")
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        bench_gpu.main(["--quick", "--cases", "lif"])


def test_bench_gpu_dry_run_on_the_cpu_checks_triton_against_python(monkeypatch, capsys):
    """``--device cpu``: the benchmark's code on the CPU (Triton through its interpreter), tiny:
    every case prints a row per backend, and our backends' outputs are checked against python's."""
    import bench_gpu

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    rows = bench_gpu.main(["--device", "cpu", "--quick", "--cases", "lif", "adex", "recurrent", "--sizes", "40",
                           "--recurrent-sizes", "12", "--steps", "5", "--batch", "2", "--budget", "0",
                           "--backends", "triton", "python"])
    ours = {(case, name): checked for case, _, name, _, _, _, checked in rows if name in ("triton", "python")}
    assert ours == {(case, name): "same" for case in ("lif", "adex", "recurrent") for name in ("triton", "python")}
    header = capsys.readouterr().out.splitlines()[0]
    assert "CPU (dry run" in header and "triton " in header and "torch " in header
    rows = bench_gpu.main(["--device", "cpu", "--cases", "train", "--budget", "0", "--backends", "python"])
    assert [(case, name, checked) for case, _, name, _, _, _, checked in rows if name == "python"] == [
        ("train", "python", "same")]


def run_gpu_check(tmp_path, parts: str, python: str = sys.executable):
    env = dict(os.environ, PYTHON=python, LOG_DIR=str(tmp_path), PARTS=parts)
    env.pop("TRITON_INTERPRET", None)
    return subprocess.run(["bash", str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"),
                           "--dry-run"], capture_output=True, text=True, env=env, timeout=900)


def summary(output: str) -> dict:
    """``{part: status}`` from gpu_check.sh's summary table."""
    rows = output.split("## gpu_check summary", 1)[1].splitlines()[3:]
    return {row.split("|")[1].strip(): row.split("|")[2].strip() for row in rows if row.startswith("| ")}


@pytest.mark.slow
def test_gpu_check_dry_run_passes_every_part_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh --dry-run: every part on the CPU (the Triton checks through the
    interpreter, the benchmark, a store-recall and a bf16-mixed training), a summary table, exit 0."""
    result = run_gpu_check(tmp_path, "versions triton benchmark store_recall bf16_mixed")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert summary(result.stdout) == dict.fromkeys(["versions", "triton", "benchmark", "store_recall", "bf16_mixed"],
                                                   "ok")
    assert "all GPU checks passed" in (tmp_path / "triton.log").read_text()
    assert "Using bfloat16 Automatic Mixed Precision (AMP)" in (tmp_path / "bf16_mixed.log").read_text()
    assert "test/acc" in (tmp_path / "store_recall.log").read_text()


def test_gpu_check_reports_each_failing_part_and_goes_on(tmp_path):
    """A part that fails is a row of the summary (with its exit status) and the next part still
    runs; the script exits 1."""
    result = run_gpu_check(tmp_path, "versions triton benchmark", python="false")
    assert result.returncode == 1
    assert summary(result.stdout) == dict.fromkeys(["versions", "triton", "benchmark"], "FAILED (exit 1)")
    assert {p.name for p in tmp_path.glob("*.log")} == {"versions.log", "triton.log", "benchmark.log"}


def test_bench_memory_tasks_runs_on_a_tiny_task():
    from bench_memory_tasks import main

    results = main(["--quick", "--seconds", "0", "--reference"])
    assert set(results) == {"generate", "step", "generate (before)", "loop w0", "loop w1"}
    assert all(value > 0 for value in results.values())


def test_bench_recurrent_train_step_times_the_sfmnist_model_dense_and_sparse():
    from bench_recurrent import sfmnist_step_times

    times, rate = sfmnist_step_times(0.0, threads_variants=("auto",))
    assert set(times) == {"dense", "auto"} and all(len(ts) >= 3 and min(ts) > 0 for ts in times.values())
    assert 0 < rate < 1  # the hidden layer spikes, sparsely


def test_bench_thread_policy_ratios_and_layer_scenario(capsys, tmp_path):
    """Ratios against the best pinned variant (per round when interleaved, of medians otherwise),
    the layer scenario at tiny sizes, and the training-step timer's file."""
    from bench_thread_policy import StepTimer, main, ratio_rows

    times = {"default": [3.0, 5.0, 4.0], "SNN_STEP_THREADS=1": [2.0, 6.0, 5.0], "SNN_STEP_THREADS=2": [2.0, 4.0, 4.0]}
    # The best pinned variant by median: =2 (4 against 5); per-round ratios to it: 1.5, 1.25, 1.
    interleaved = {v: r for v, _, r in ratio_rows(times, True)}
    assert interleaved == {"default": 1.25, "SNN_STEP_THREADS=1": 1.25, "SNN_STEP_THREADS=2": 1.0}
    of_medians = {v: r for v, _, r in ratio_rows(times, False)}
    assert of_medians == {"default": 1.0, "SNN_STEP_THREADS=1": 1.25, "SNN_STEP_THREADS=2": 1.0}
    main(["--quick", "--scenarios", "layer"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| default") or line.startswith("| SNN_STEP")]
    assert len(rows) == 3 and "forward + backward, alone" in out
    timer = StepTimer(str(tmp_path / "steps.json"))
    for batch in range(3):
        timer.on_train_batch_end(None, None, None, None, batch)
    ends = __import__("json").loads((tmp_path / "steps.json").read_text())
    assert len(ends) == 3 and ends == sorted(ends)
