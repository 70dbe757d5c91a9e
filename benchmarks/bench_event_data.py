"""Event-data loader throughput against the training step, on generated files of realistic size.

For each data set the script writes files in the set's real format with event counts like the
real ones (N-MNIST: ~4,200 events in 0.3 s per digit; SHD: ~8,000 spikes in ~0.8 s over 700
channels; DVS Gesture: AEDAT 3.1 recordings of 6 s gestures at ~60,000 events/s), then reports

- ``build``: samples/s of the first pass (read the files, denoise, bin, write the cache);
- ``load``: samples/s of the training loader from the cache (dense frames, batches), with
  ``--workers`` loader processes;
- ``step``: samples/s of a training step (forward, cross-entropy, backward, AdamW) of the data
  set's recipe model on the batches, on CUDA when available.

The loader keeps up when ``load`` is well above ``step``. Numbers from these generated files say
nothing about accuracy.

    python benchmarks/bench_event_data.py                     # all sets, ~1 minute per set
    python benchmarks/bench_event_data.py --sets nmnist --workers 4
    python benchmarks/bench_event_data.py --quick             # tiny sizes: checks that it runs
"""

from __future__ import annotations

import argparse
import struct
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF = str(Path(__file__).resolve().parents[1] / "conf")
# dataset option -> (model overrides for its recipe, events per sample, seconds per sample)
SETS = {
    "nmnist": (["experiment=nmnist_adex"], 4200, 0.3),
    "shd": (["dataset=shd", "model=adex", "model.conv=null", "model.hidden=256"], 8000, 0.8),
    "dvs_gesture": (["experiment=dvs_gesture_adex"], 360_000, 6.0),
}


def write_nmnist(folder: Path, n: int, events: int, seconds: float, rng) -> None:
    for split, count in (("Train", n), ("Test", max(2, n // 6))):
        for i in range(count):
            k = int(rng.poisson(events))
            t = np.sort(rng.integers(0, int(seconds * 1e6), k))
            raw = np.empty((k, 5), dtype=np.uint8)  # 40-bit events
            raw[:, 0], raw[:, 1] = rng.integers(0, 34, k), rng.integers(0, 34, k)
            raw[:, 2] = (rng.integers(0, 2, k) << 7) | (t >> 16) & 127
            raw[:, 3], raw[:, 4] = (t >> 8) & 255, t & 255
            path = folder / split / str(i % 10) / f"{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            raw.tofile(path)


def write_shd(folder: Path, n: int, events: int, seconds: float, rng) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("shd_train.h5", n), ("shd_test.h5", max(2, n // 4))):
        with h5py.File(folder / name, "w") as f:
            times = f.create_dataset("spikes/times", (count,), dtype=h5py.vlen_dtype(np.float32))
            units = f.create_dataset("spikes/units", (count,), dtype=h5py.vlen_dtype(np.uint16))
            for i in range(count):
                k = int(rng.poisson(events))
                times[i] = np.sort(rng.uniform(0, seconds, k)).astype(np.float32)
                units[i] = rng.integers(0, 700, k).astype(np.uint16)
            f.create_dataset("labels", data=np.arange(count, dtype=np.uint16) % 20)


def write_dvs(folder: Path, n: int, events: int, seconds: float, rng) -> None:
    """Recordings of up to 11 gestures each, as IBM distributes them (AEDAT 3.1 + labels CSV)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train": [], "test": []}
    for split, count in (("train", n), ("test", max(2, n // 4))):
        for r in range(0, count, 11):
            name = f"user{len(names['train']) + len(names['test']):02d}_{split}"
            gestures = min(11, count - r)
            k = int(events * gestures)
            t = np.sort(rng.integers(0, int(seconds * 1e6 * gestures), k)).astype(np.int64)
            bits = (
                rng.integers(0, 128, k) << 17
                | rng.integers(0, 128, k) << 2
                | rng.integers(0, 2, k) << 1
                | 1
            ).astype(np.uint32)
            records = np.empty(k, dtype=[("data", "<u4"), ("t", "<i4")])
            records["data"], records["t"] = bits, t
            packets = []
            for start in range(0, k, 8192):  # packets of 8192 events, as jAER writes them
                chunk = records[start : start + 8192]
                packets.append(
                    struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, len(chunk), len(chunk), len(chunk))
                )
                packets.append(chunk.tobytes())
            header = b"#!AER-DAT3.1\r\n#!END-HEADER\r\n"
            (folder / f"{name}.aedat").write_bytes(header + b"".join(packets))
            us = int(seconds * 1e6)
            rows = "".join(f"{g + 1},{g * us},{(g + 1) * us}\n" for g in range(gestures))
            (folder / f"{name}_labels.csv").write_text("class,startTime_usec,endTime_usec\n" + rows)
            names[split].append(f"{name}.aedat")
    for split in names:
        (folder / f"trials_to_{split}.txt").write_text("\n".join(names[split]) + "\n")


WRITERS = {
    "nmnist": write_nmnist,
    "shd": lambda d, *a: write_shd(d, *a),
    "dvs_gesture": lambda d, *a: write_dvs(d / "DvsGesture", *a),
}


def run(
    name: str,
    n: int,
    workers: int,
    batches: int,
    steps: int,
    scale: float,
    folder: Path,
    extra: list[str],
) -> dict:
    overrides, events, seconds = SETS[name]
    rng = np.random.default_rng(0)
    WRITERS[name](folder, n, max(1, int(events * scale)), seconds, rng)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                *overrides,
                f"paths.data_dir={folder}",
                "dataset.download=false",
                f"dataset.num_workers={workers}",
                "dataset.val_size=2",
                "dataset.pin_memory=false",
                *extra,
            ],
        )
    dm = instantiate(cfg.dataset, _convert_="all")
    start = time.perf_counter()
    dm.setup()
    built = time.perf_counter() - start
    total = len(dm.train_set) + len(dm.val_set) + len(dm.test_set)

    loader = dm.train_dataloader()
    start, seen = time.perf_counter(), 0
    for i, (x, y) in enumerate(loader):  # noqa: B007 (the last batch is used below)
        seen += len(x)
        if i + 1 >= batches:
            break
    loaded = time.perf_counter() - start

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = instantiate(cfg.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = x.to(device), y.to(device)
    times = []
    for _ in range(steps + 1):  # the first step warms up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = float(np.median(times[1:]))
    return {
        "set": name,
        "samples": total,
        "batch": list(x.shape),
        "build": total / built,
        "load": seen / loaded,
        "step": len(x) / step,
        "device": device,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--samples", type=int, default=600, help="training samples per set")
    parser.add_argument("--workers", type=int, default=2, help="loader processes")
    parser.add_argument("--batches", type=int, default=8, help="batches timed per loader")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed")
    parser.add_argument("--quick", action="store_true", help="tiny files and counts: a smoke run")
    args = parser.parse_args(argv)
    samples, scale, workers, batches, steps = (
        args.samples,
        1.0,
        args.workers,
        args.batches,
        args.steps,
    )
    extra = []
    if args.quick:
        samples, scale, workers, batches, steps = 24, 0.01, 0, 2, 1
        extra = ["dataset.batch_size=4", "model.hidden=16", "model.conv.channels=[4]"]
    rows = []
    print(
        f"{'set':12} {'samples':>7} {'batch':>20} {'build/s':>9} {'load/s':>9} {'step/s':>9} device"
    )
    for name in args.sets:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(
                name,
                samples,
                workers,
                batches,
                steps,
                scale,
                Path(tmp),
                [e for e in extra if name != "shd" or "conv" not in e],
            )
        rows.append(r)
        print(
            f"{r['set']:12} {r['samples']:>7} {str(r['batch']):>20} {r['build']:>9.0f} "
            f"{r['load']:>9.0f} {r['step']:>9.1f} {r['device']}"
        )
    return rows


if __name__ == "__main__":
    main()
