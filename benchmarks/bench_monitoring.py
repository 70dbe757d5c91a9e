"""What the TensorBoard monitoring callbacks cost: the same training with and without them.

    python benchmarks/bench_monitoring.py [--repeats 3] [--steps 40] [--epochs 2]

Both variants build the run from conf/ (the Fashion-MNIST experiment's network: BN conv [32, 64],
256 AdEx neurons, T = 16, batch 128) on synthetic 28x28 data, with the TensorBoard logger and
checkpoints on; "monitored" adds spike_statistics, spike_raster (every epoch: the worst case; the
default is every 2nd), neuron_params and hparams. The variants alternate, so drifting machine load
hits both alike; the table shows the median fit time of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from snn.training.run import build  # noqa: E402

MONITORS = ("spike_statistics", "spike_raster", "neuron_params", "hparams")


def fit_seconds(output_dir: Path, monitored: bool, steps: int, epochs: int) -> float:
    overrides = [
        f"paths.output_dir={output_dir}", "model=adex", "model.T=16", "model.hidden=256", "model.conv.channels=[32,64]",
        "model.conv.kernel_size=3", "model.dropout=0.2", "model.decoder=mean", "dataset=synthetic",
        "dataset.input_shape=[1,28,28]", "dataset.num_classes=10", f"dataset.num_train={128 * steps + 256}",
        "dataset.val_size=256", "dataset.batch_size=128", f"trainer.max_epochs={epochs}", "trainer.accelerator=cpu",
        "callbacks.progress_bar=null", "callbacks.model_summary=null", "callbacks.spike_raster.every_n_epochs=1",
        "test=false",
    ]
    if not monitored:
        overrides += [f"callbacks.{name}=null" for name in MONITORS]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    module, datamodule, trainer = build(cfg)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        fit_seconds(Path(tmp) / "warmup", True, 2, 1)  # builds the C++ kernels, imports matplotlib
        for r in range(args.repeats):
            for monitored in (False, True) if r % 2 == 0 else (True, False):
                times[monitored].append(fit_seconds(Path(tmp) / f"{r}_{monitored}", monitored, args.steps, args.epochs))
                print(f"repeat {r}: {'monitored' if monitored else 'plain'} {times[monitored][-1]:.2f} s", flush=True)
    plain, monitored = statistics.median(times[False]), statistics.median(times[True])
    steps = args.steps * args.epochs
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; {args.epochs} epochs x {args.steps} steps "
          f"(+ validation of 256 samples per epoch), median of {args.repeats}\n")
    print("| variant | fit s | ms / training step | ratio |\n|---|---|---|---|")
    print(f"| plain | {plain:.2f} | {1000 * plain / steps:.1f} | 1.000 |")
    print(f"| monitored | {monitored:.2f} | {1000 * monitored / steps:.1f} | {monitored / plain:.3f} |")


if __name__ == "__main__":
    main()
