"""What helps the Fashion-MNIST AdEx recipe: one short, equal-budget run per variant.

Every variant is ``experiment=fashion_mnist_adex`` plus a few overrides, trained for the same
``--steps`` batches from the same seed and scored on the validation split (never on test):
validation accuracy and the hidden layer's mean firing rate (spikes per neuron and step) after
``--steps`` steps. Short probes rank early learning, not final accuracy.

    OMP_NUM_THREADS=1 python benchmarks/ablation.py --steps 300          # the table in RESULTS.md
    python benchmarks/ablation.py --steps 20 --only recipe T=8           # a quick look at two rows
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name -> overrides of experiment=fashion_mnist_adex (the recipe: super surrogate, alpha 10,
# T 16, dt 1 ms, mean decoder, fixed time constants, no rate penalty, mirrored training images).
VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "LIF neurons": ["model=lif"],
    "surrogate super, alpha=100 (model default)": ["model.neuron.alpha=100"],
    "surrogate super, alpha=3": ["model.neuron.alpha=3"],
    "surrogate triangle, alpha=1": ["model.neuron.method=triangle", "model.neuron.alpha=1"],
    "T=8": ["model.T=8"],
    "T=32": ["model.T=32"],
    "dt=2 ms": ["model.dt=0.002"],
    "decoder max": ["model.decoder=max"],
    "learnable time constants": ["model.neuron.learnable=[tau_syn_inv,tau_mem_inv,tau_ada_inv]"],
    "rate penalty (weight 10, target 0.05)": ["regularizer.rate_weight=10", "regularizer.rate_target=0.05"],
    "no mirrored images": ["dataset.flip=false"],
}


def last_value(rows: list[dict[str, str]], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key)]
    if not values:
        raise RuntimeError(f"{key} was not logged; columns: {sorted(rows[0]) if rows else []}")
    return values[-1]


def run_variant(overrides: list[str], steps: int, out_dir: Path) -> dict[str, float]:
    from hydra import compose, initialize_config_dir

    from snn.training.run import run as train

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "experiment=fashion_mnist_adex", *overrides,
            f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "test=false",
            "logger=csv", f"paths.output_dir={out_dir}", "callbacks.progress_bar=null",
        ])
    start = time.perf_counter()
    train(cfg)
    seconds = time.perf_counter() - start
    with open(out_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return {
        "val_acc": last_value(rows, "val/acc"),
        "rate": last_value(rows, "spikes/hidden1/val_rate"),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training batches per variant")
    parser.add_argument("--only", nargs="*", help="names of the variants to run (default: all)")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    names = args.only or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"Unknown variant(s) {unknown}; choose from {list(VARIANTS)}")

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        results = {}
        for i, name in enumerate(names):
            results[name] = run_variant(VARIANTS[name], args.steps, base / f"{i:02d}")
            print(f"{name}: {results[name]}", flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{args.steps} training steps of batch 128 per variant, seed 42, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), load average {load:.1f} at the end\n")
    print("| variant | overrides | val. acc. (%) | hidden rate | wall s |")
    print("|---|---|---|---|---|")
    for name in names:
        r = results[name]
        overrides = " ".join(f"`{o}`" for o in VARIANTS[name]) or "—"
        print(f"| {name} | {overrides} | {100 * r['val_acc']:.1f} | {r['rate']:.3f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
