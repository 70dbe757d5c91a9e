"""Event data (snn.data): tiny files in each set's real format, read, binned, cached, split, padded,
trained on through train.py; damaged files name themselves; downloads check their checksums."""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from snn.data import (
    DataError,
    DVSGestureDataModule,
    FrameSpec,
    NMNISTDataModule,
    SHDDataModule,
    SSCDataModule,
    denoise,
    make_events,
    pad_collate,
    read_aedat31,
    read_hdf5,
    read_nmnist,
)
from snn.data import cache as cache_module
from snn.data import download as download_module
from snn.data.binning import densify
from snn.data.download import Remote
from snn.models.encoders import EventFramesEncoder
from snn.training.run import run as train
from tests.helpers import ROOT, compose_config, fit_and_recheck
from tests.hostile_hdf5 import CASES as HOSTILE_HDF5
from tests.hostile_hdf5 import plant

# Writers of each format (the inverse of the readers, written from the format descriptions).


def write_nmnist(path: Path, events: list[tuple[int, int, int, int]]) -> None:
    """(x, y, p, t) events as 40-bit records: x, y, p << 7 | t[22:16], t[15:8], t[7:0]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"".join(
            bytes([x, y, (p << 7) | (t >> 16) & 127, (t >> 8) & 255, t & 255])
            for x, y, p, t in events
        )
    )


def aedat_packet(kind: int, records: bytes, count: int, size: int = 8, overflow: int = 0) -> bytes:
    return struct.pack("<hhiiiiii", kind, 1, size, 4, overflow, count, count, count) + records


def polarity_records(events: list[tuple[int, int, int, int]], valid: bool = True) -> bytes:
    """(x, y, p, t) as AEDAT 3.1 polarity records: x << 17 | y << 2 | p << 1 | valid, int32 t."""
    return b"".join(
        struct.pack("<Ii", x << 17 | y << 2 | p << 1 | int(valid), t) for x, y, p, t in events
    )


def write_aedat(path: Path, packets: list[bytes]) -> None:
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    path.write_bytes(header + b"".join(packets))


def write_h5(path: Path, samples: list[tuple[np.ndarray, np.ndarray, int]]) -> None:
    """SHD/SSC layout: spikes/times (float s), spikes/units (uint16), labels."""
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(samples),), dtype=h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u, _) in enumerate(samples):
            times[i], units[i] = t.astype(np.float32), u.astype(np.uint16)
        f.create_dataset(
            "labels", data=np.array([label for _, _, label in samples], dtype=np.uint16)
        )


def random_audio(
    rng: np.random.Generator, label: int, n: int = 60
) -> tuple[np.ndarray, np.ndarray, int]:
    # Class-dependent channels, so the tiny task is learnable.
    units = (rng.integers(0, 140, n) + 140 * label) % 700
    return np.sort(rng.uniform(0, rng.uniform(0.03, 0.09), n)), units, label


def make_shd(
    folder: Path, n_train: int = 24, n_test: int = 8, classes: int = 3, seed: int = 0
) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("shd_train.h5", n_train), ("shd_test.h5", n_test)):
        write_h5(folder / name, [random_audio(rng, i % classes) for i in range(n)])


def make_nmnist(folder: Path, per_digit: int = 4, digits: int = 3, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split in ("Train", "Test"):
        for d in range(digits):
            for i in range(per_digit):
                n = 40
                xs, ys = rng.integers(0, 10, n) + 10 * d, rng.integers(0, 34, n)
                ts = np.sort(rng.integers(0, 300_000, n))
                write_nmnist(
                    folder / split / str(d) / f"{i:05d}.bin",
                    [
                        (int(x), int(y), int(rng.integers(2)), int(t))
                        for x, y, t in zip(xs, ys, ts, strict=True)
                    ],
                )


def make_dvs(folder: Path, seed: int = 0) -> None:
    """Two recordings (train, test), each with three gestures of 3 classes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("user01_led", "user02_led"):
        events = []
        for k in range(3):  # gesture k from k s to k s + 1 s, pixels in its own band
            t = np.sort(rng.integers(k * 1_000_000, k * 1_000_000 + 900_000, 80))
            events += [
                (
                    int(rng.integers(40 * k, 40 * k + 40)),
                    int(rng.integers(128)),
                    int(rng.integers(2)),
                    int(ti),
                )
                for ti in t
            ]
        half = len(events) // 2
        write_aedat(
            folder / f"{name}.aedat",
            [
                aedat_packet(1, polarity_records(events[:half]), half),
                aedat_packet(1, polarity_records(events[half:]), len(events) - half),
            ],
        )
        rows = "".join(f"{k + 1},{k * 1_000_000},{k * 1_000_000 + 1_000_000}\n" for k in range(3))
        (folder / f"{name}_labels.csv").write_text("class,startTime_usec,endTime_usec\n" + rows)
    (folder / "trials_to_train.txt").write_text("user01_led.aedat\n")
    (folder / "trials_to_test.txt").write_text("user02_led.aedat\n")


def compose_cfg(tmp_path: Path, *overrides: str):
    return compose_config(f"paths.output_dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}", *overrides)


# Readers.


def test_nmnist_reader_decodes_40_bit_events_and_overflow_markers(tmp_path):
    path = tmp_path / "s.bin"
    write_nmnist(path, [(3, 4, 1, 5), (33, 0, 0, 2**23 - 1), (0, 240, 0, 0), (1, 2, 1, 7)])
    events = read_nmnist(path)
    assert events["x"].tolist() == [3, 33, 1] and events["y"].tolist() == [4, 0, 2]
    assert events["p"].tolist() == [1, 0, 1]
    assert events["t"].tolist() == [5, 2**23 - 1, 7 + 2**13]  # the y = 240 marker adds 2^13 us


def test_aedat31_reader_decodes_polarity_packets_only(tmp_path):
    path = tmp_path / "r.aedat"
    special = aedat_packet(0, b"\0" * 16, 2)  # another event type: skipped
    write_aedat(
        path,
        [
            aedat_packet(1, polarity_records([(127, 5, 1, 10), (0, 127, 0, 20)]), 2),
            special,
            aedat_packet(
                1,
                polarity_records([(9, 9, 1, 3)], valid=False) + polarity_records([(1, 2, 0, 30)]),
                2,
                overflow=1,
            ),
        ],
    )
    events = read_aedat31(path)
    assert events["x"].tolist() == [127, 0, 1] and events["y"].tolist() == [5, 127, 2]
    assert events["p"].tolist() == [1, 0, 0]
    assert events["t"].tolist() == [10, 20, 30 + 2**31]  # the invalid event is dropped


def test_hdf5_reader_returns_microseconds_and_units(tmp_path):
    write_h5(tmp_path / "a.h5", [(np.array([0.0, 0.0015, 0.25]), np.array([0, 699, 7]), 4)])
    [(events, label)] = list(read_hdf5(tmp_path / "a.h5"))
    assert (
        label == 4
        and events["t"].tolist() == [0, 1500, 250000]
        and events["x"].tolist() == [0, 699, 7]
    )


@pytest.mark.parametrize("kind", ["nmnist", "aedat", "aedat_header", "h5", "h5_units", "labels"])
def test_corrupt_or_truncated_files_raise_an_error_naming_the_file(tmp_path, kind):
    if kind == "nmnist":
        path = tmp_path / "t.bin"
        write_nmnist(path, [(1, 1, 0, 1), (2, 2, 1, 2)])
        path.write_bytes(path.read_bytes()[:-2])
        read = read_nmnist
    elif kind == "aedat":
        path = tmp_path / "t.aedat"
        write_aedat(path, [aedat_packet(1, polarity_records([(1, 1, 0, 1), (2, 2, 1, 2)]), 2)])
        path.write_bytes(path.read_bytes()[:-3])
        read = read_aedat31
    elif kind == "aedat_header":
        path = tmp_path / "t.aedat"
        path.write_bytes(b"<html>not found</html>")
        read = read_aedat31
    elif kind in ("h5", "h5_units"):
        path = tmp_path / "t.h5"
        write_h5(path, [(np.array([0.1]), np.array([800 if kind == "h5_units" else 3]), 0)] * 3)
        if kind == "h5":
            path.write_bytes(path.read_bytes()[:1000])
        read = lambda p: list(read_hdf5(p))  # noqa: E731
    else:
        path = tmp_path / "u_labels.csv"
        path.write_text("gesture,from,to\n1,0,10\n")
        from snn.data import read_gesture_labels as read
    with pytest.raises(DataError, match=str(path)):
        read(path)


# Binning, padding, denoising.


def dense_reference(events, spec: FrameSpec, sensor, steps: int, width_us: float) -> np.ndarray:
    """Frames by a loop over events: the definition of binning."""
    p_n, h_n, w_n = spec.frame_shape(sensor)
    frames = np.zeros((steps, p_n, h_n, w_n))
    k, k_y = spec.downsample, 1 if sensor[1] == 1 else spec.downsample
    for t, x, y, p in zip(events["t"], events["x"], events["y"], events["p"], strict=True):
        if spec.duration is not None and t >= spec.duration * 1e6:
            continue
        frames[min(int(t // width_us), steps - 1), p if spec.polarity else 0, y // k_y, x // k] += 1
    return frames


@pytest.mark.parametrize(
    "spec,steps,width",
    [
        (FrameSpec(bin_width=0.01, duration=0.05), 5, 10_000),
        (
            FrameSpec(time_bins=4, downsample=4, polarity=False),
            4,
            60_001 / 4,
        ),  # span: last event + 1 us
        (FrameSpec(bin_width=0.007, downsample=3), 9, 7_000),  # ceil(60001 / 7000): variable T
    ],
)
def test_frames_count_events_per_bin_polarity_and_pooled_pixel(spec, steps, width):
    rng = np.random.default_rng(1)
    sensor = (2, 34, 34)
    events = make_events(
        np.sort(np.r_[rng.integers(0, 60_000, 300), 60_000]),
        rng.integers(0, 34, 301),
        rng.integers(0, 34, 301),
        rng.integers(0, 2, 301),
    )
    cells, got_steps = spec.to_sparse(events, sensor)
    assert got_steps == steps
    frames = densify(cells, got_steps, spec.frame_shape(sensor))
    np.testing.assert_array_equal(
        frames.numpy(), dense_reference(events, spec, sensor, steps, width)
    )


def test_audio_channels_are_pooled_700_to_140():
    spec = FrameSpec(time_bins=1, downsample=5)
    events = make_events([0, 1, 2, 3], [0, 4, 5, 699])
    frames = densify(*spec.to_sparse(events, (1, 1, 700)), spec.frame_shape((1, 1, 700))[2:])
    assert (
        frames.shape == (1, 140) and frames[0, 0] == 2 and frames[0, 1] == 1 and frames[0, 139] == 1
    )


def test_pad_collate_pads_at_the_end_and_reports_lengths():
    a, b = torch.ones(3, 2), 2 * torch.ones(5, 2)
    x, y, lengths = pad_collate([(a, 1), (b, 0)], with_lengths=True)
    assert x.shape == (2, 5, 2) and y.tolist() == [1, 0] and lengths.tolist() == [3, 5]
    assert x[0, 3:].abs().sum() == 0 and torch.equal(x[0, :3], a) and torch.equal(x[1], b)
    assert len(pad_collate([(a, 1)])) == 2


def test_denoise_keeps_events_with_a_recent_neighbour():
    rng = np.random.default_rng(0)
    n = 400
    events = make_events(
        np.sort(rng.integers(0, 50_000, n)), rng.integers(0, 12, n), rng.integers(0, 12, n)
    )
    filter_time = 3_000
    last = {}  # pixel -> time of its latest event so far
    keep = []
    for t, x, y in zip(events["t"], events["x"], events["y"], strict=True):
        neighbours = [(x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)]
        keep.append(any(q in last and last[q] > t - filter_time for q in neighbours))
        last[(x, y)] = t
    kept = denoise(events, filter_time)
    np.testing.assert_array_equal(kept, events[np.array(keep)])
    assert 0 < len(kept) < n


# DataModules: caches, splits, transforms.


def nmnist_module(tmp_path, **kwargs) -> NMNISTDataModule:
    args = dict(
        data_dir=str(tmp_path / "data"),
        download=False,
        input_shape=(30, 2, 34, 34),
        T=30,
        frames={"bin_width": 0.01, "duration": 0.3},
        val_size=3,
        batch_size=4,
    )
    return NMNISTDataModule(**{**args, **kwargs})


def test_cache_is_reused_and_a_changed_setting_rebuilds_it(tmp_path, monkeypatch):
    make_nmnist(tmp_path / "data")
    first = nmnist_module(tmp_path)
    first.setup()
    x, y = first.train_set[0]
    caches = sorted(p.name for p in (tmp_path / "data" / "event_cache").iterdir())
    assert len(caches) == 2 and not any(
        name.startswith(".") for name in caches
    )  # no temp folders left

    def no_reading(*args):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("snn.data.event_camera.read_nmnist", no_reading)
    again = nmnist_module(tmp_path)
    again.setup()
    x2, y2 = again.train_set[0]
    assert torch.equal(x, x2) and y == y2

    changed = nmnist_module(
        tmp_path, input_shape=(15, 2, 34, 34), T=15, frames={"bin_width": 0.02, "duration": 0.3}
    )
    with pytest.raises(AssertionError, match="cache should have been used"):
        changed.setup()  # a new key: the files must be read again
    monkeypatch.undo()
    changed.setup()
    assert changed.train_set[0][0].shape == (15, 2, 34, 34)
    assert len(list((tmp_path / "data" / "event_cache").iterdir())) == 4


def test_a_replaced_data_file_invalidates_the_cache(tmp_path):
    make_nmnist(tmp_path / "data")
    dm = nmnist_module(tmp_path, val_size=1)
    dm.setup()
    path = tmp_path / "data" / "Test" / "0" / "00000.bin"
    write_nmnist(path, [(1, 1, 0, 1)])
    again = nmnist_module(tmp_path, val_size=1)
    again.setup()
    assert again.test_set[0][0].sum() == 1 and dm.test_set[0][0].sum() == 40


def test_a_corrupt_file_stops_the_cache_build_naming_it_and_leaves_no_entry(tmp_path):
    make_nmnist(tmp_path / "data")
    bad = tmp_path / "data" / "Test" / "1" / "00002.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataError, match=str(bad)):
        nmnist_module(tmp_path).setup()
    cache = tmp_path / "data" / "event_cache"
    assert [p.name.startswith("n-mnist-train-") for p in cache.iterdir()] == [True]  # no test entry
    write_nmnist(bad, [(1, 1, 0, 1)])
    fixed = nmnist_module(tmp_path)
    fixed.setup()
    assert len(fixed.test_set) == 12


def test_shd_validation_is_carved_from_training_with_a_fixed_seed_and_ssc_uses_its_file(tmp_path):
    make_shd(tmp_path / "data", n_train=20, n_test=6)
    args = dict(
        data_dir=str(tmp_path / "data"),
        download=False,
        input_shape=(10, 140),
        T=10,
        frames={"bin_width": 0.01, "duration": 0.1, "downsample": 5},
    )
    a, b = SHDDataModule(val_size=5, **args), SHDDataModule(val_size=5, **args)
    a.setup(), b.setup()
    assert len(a.train_set) == 15 and len(a.val_set) == 5 and len(a.test_set) == 6
    assert set(a.val_set.indices).isdisjoint(a.train_set.indices)
    assert list(a.val_set.indices) == list(b.val_set.indices)  # every run validates on the same
    assert (
        a.val_set.samples is a.train_set.samples and a.test_set.samples is not a.train_set.samples
    )
    other = SHDDataModule(val_size=5, split_seed=1, **args)
    other.setup()
    assert list(other.val_set.indices) != list(a.val_set.indices)

    rng = np.random.default_rng(5)
    folder = tmp_path / "ssc"
    folder.mkdir()
    for name, n in (("ssc_train.h5", 8), ("ssc_valid.h5", 3), ("ssc_test.h5", 2)):
        write_h5(folder / name, [random_audio(rng, i % 4) for i in range(n)])
    ssc = SSCDataModule(**{**args, "data_dir": str(folder)})
    ssc.setup()
    assert (len(ssc.train_set), len(ssc.val_set), len(ssc.test_set)) == (8, 3, 2)


def test_augmentations_vary_training_samples_only(tmp_path):
    make_nmnist(tmp_path / "data")
    dm = nmnist_module(tmp_path, transforms={"drop_event": 0.5, "time_jitter": 0.005})
    dm.setup()
    assert dm.train_set.events and dm.train_set.augment is not None
    torch.manual_seed(0)
    first, second = dm.train_set[0][0], dm.train_set[0][0]
    assert not torch.equal(first, second) and first.sum() < 40
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0]) and dm.val_set[0][0].sum() == 40
    plain = nmnist_module(tmp_path)
    plain.setup()
    torch.testing.assert_close(dm.test_set[0][0], plain.test_set[0][0])


def test_variable_length_samples_are_padded_in_batches(tmp_path):
    make_shd(tmp_path / "data", n_train=12, n_test=4)
    dm = SHDDataModule(
        data_dir=str(tmp_path / "data"),
        download=False,
        input_shape=(None, 140),
        T=None,
        frames={"bin_width": 0.01, "downsample": 5},
        val_size=2,
        batch_size=12,
        return_lengths=True,
    )
    dm.setup()
    x, y, lengths = next(iter(dm.test_dataloader()))
    assert x.shape[1] == lengths.max() and len(set(lengths.tolist())) > 1
    for i, n in enumerate(lengths.tolist()):
        assert x[i, n:].sum() == 0 and x[i, n - 1].sum() > 0  # the last bin holds the last spike


def test_a_mismatched_input_shape_says_what_to_set(tmp_path):
    with pytest.raises(ValueError, match=r"dataset.T=15 .*input_shape=\[\$\{\.\.T\}, 2, 34, 34\]"):
        nmnist_module(tmp_path, frames={"bin_width": 0.02, "duration": 0.3})


def test_dvs_gesture_recordings_are_cut_by_their_labels(tmp_path):
    make_dvs(tmp_path / "data" / "DvsGesture")
    dm = DVSGestureDataModule(
        data_dir=str(tmp_path / "data"),
        download=False,
        input_shape=(10, 2, 32, 32),
        T=10,
        num_classes=3,
        frames={"bin_width": 0.1, "duration": 1.0, "downsample": 4},
        val_size=1,
    )
    dm.setup()
    labels = sorted(dm.test_set.samples.labels.tolist())
    assert labels == [0, 1, 2] and len(dm.train_set) + len(dm.val_set) == 3
    for i in range(3):
        frames, label = dm.test_set[i]
        assert frames.sum() == 80  # every event of its gesture, none of the others'
        columns = frames.sum(dim=(0, 1, 2)).nonzero().flatten()
        assert columns.min() >= 10 * label and columns.max() < 10 * label + 10  # its band of pixels


def test_dvs_gesture_reads_tonics_npy_layout(tmp_path):
    for split, user in (("ibmGestureTrain", "user01_led"), ("ibmGestureTest", "user02_led")):
        folder = tmp_path / split / user
        folder.mkdir(parents=True)
        for label in range(3):
            t_ms = np.arange(50.0) * 10 + 7000  # absolute times: read relative to the first event
            np.save(
                folder / f"{label}.npy",
                np.stack([np.full(50, 4 * label), np.zeros(50), np.ones(50), t_ms], 1),
            )
    dm = DVSGestureDataModule(
        data_dir=str(tmp_path),
        download=False,
        input_shape=(5, 2, 32, 32),
        T=5,
        num_classes=3,
        frames={"bin_width": 0.1, "duration": 0.5, "downsample": 4},
        val_size=1,
    )
    dm.setup()
    frames, label = dm.test_set[2]
    assert label == 2 and frames[:, 1, 0, 2].tolist() == [10.0] * 5


def test_ddp_ranks_read_the_same_split_and_get_disjoint_shards(tmp_path):
    make_nmnist(tmp_path / "data", per_digit=6)
    ranks = [nmnist_module(tmp_path, val_size=2) for _ in range(2)]
    for dm in ranks:  # what every process runs
        dm.setup()
    assert list(ranks[0].train_set.indices) == list(ranks[1].train_set.indices)
    shards = [
        list(DistributedSampler(dm.train_set, num_replicas=2, rank=r, shuffle=True, seed=3))
        for r, dm in enumerate(ranks)
    ]
    assert set(shards[0]).isdisjoint(shards[1]) and sorted(shards[0] + shards[1]) == list(range(16))
    first = [ranks[r].train_set[shards[r][0]][0] for r in range(2)]
    assert not torch.equal(*first)


# Files: missing, downloaded.


def test_missing_data_set_says_where_it_looked_and_what_to_do(tmp_path):
    cfg = compose_cfg(
        tmp_path, "dataset=shd", "dataset.download=false", "model.conv=null", "debug=fdr"
    )
    with pytest.raises(ValueError) as error:
        train(cfg)
    message = str(error.value)
    assert type(error.value).__name__ == "ConfigError" and message.startswith("SHD not found")
    assert str((tmp_path / "data").resolve()) in message and "shd_test.h5" in message
    assert "dataset.download=true" in message


def test_a_cut_download_leaves_no_partial_file(tmp_path, monkeypatch):
    class Cut(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("the connection was reset")
            return super().read(4)

    monkeypatch.setattr(download_module, "urlopen", lambda url: Cut(b"0123456789"))
    with pytest.raises(ConnectionResetError):
        download_module.fetch(Remote("http://test/a.zip", "a.zip", "0" * 32), tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # no hidden .a.zip.* left


def test_download_checks_the_checksum_and_unpacks(tmp_path, monkeypatch):
    make_shd(tmp_path / "src")
    archives = {}
    for name in ("shd_train.h5", "shd_test.h5"):
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.write(tmp_path / "src" / name, name)
        archives[f"http://test/{name}.zip"] = buffer.getvalue()
    import hashlib

    remotes = tuple(
        Remote(url, url.rsplit("/", 1)[1], hashlib.md5(data).hexdigest())
        for url, data in archives.items()
    )
    monkeypatch.setattr(download_module, "urlopen", lambda url: io.BytesIO(archives[url]))
    monkeypatch.setattr(SHDDataModule, "remotes", remotes)
    args = dict(
        data_dir=str(tmp_path / "data"),
        download=True,
        input_shape=(10, 140),
        T=10,
        frames={"bin_width": 0.01, "duration": 0.1, "downsample": 5},
        val_size=2,
    )
    dm = SHDDataModule(**args)
    dm.prepare_data()
    dm.setup()
    assert len(dm.test_set) == 8 and (tmp_path / "data" / "shd_test.h5").is_file()

    bad = (Remote(remotes[0].url, "other.zip", "0" * 32),)
    monkeypatch.setattr(SHDDataModule, "remotes", bad)
    (tmp_path / "data2").mkdir()
    with pytest.raises(FileNotFoundError, match="MD5"):
        SHDDataModule(**{**args, "data_dir": str(tmp_path / "data2")}).prepare_data()
    assert list((tmp_path / "data2").iterdir()) == []  # the bad download is not kept


# The model side and train.py.


def test_event_frames_encoder_makes_batches_time_major_and_checks_T():
    x = torch.rand(3, 5, 2, 4, 4)
    out = EventFramesEncoder(T=5, scale=2.0)(x)
    assert out.shape == (5, 3, 2, 4, 4) and torch.equal(out[4, 1], 2 * x[1, 4])
    with pytest.raises(ValueError, match="T=6"):
        EventFramesEncoder(T=6)(x)


@pytest.mark.parametrize(
    "dataset,model,extra",
    [
        ("nmnist", "adex", ["model.conv.channels=[4]", "model.hidden=16"]),
        (
            "dvs_gesture",
            "adex_conv",
            [
                "model.conv.channels=[4]",
                "model.hidden=16",
                "dataset.num_classes=3",
                "dataset.frames.duration=1.0",
                "dataset.frames.bin_width=0.2",
                "dataset.T=5",
            ],
        ),
        ("shd", "lif", ["model.conv=null", "model.hidden=16"]),
    ],
)
def test_a_few_training_steps_through_train_py(tmp_path, monkeypatch, dataset, model, extra):
    data = tmp_path / "data"
    {"nmnist": make_nmnist, "shd": make_shd, "dvs_gesture": lambda d: make_dvs(d / "DvsGesture")}[
        dataset
    ](data)
    cfg = compose_cfg(
        tmp_path,
        f"dataset={dataset}",
        f"model={model}",
        "dataset.download=false",
        "dataset.val_size=2",
        "dataset.batch_size=4",
        "trainer.limit_train_batches=2",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "logger=csv",
        "test=true",
        "dataset.num_workers=0",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        *extra,
    )
    fit_and_recheck(cfg, monkeypatch)  # the reported accuracy is the model's on the event frames


# Hostile and careless files: each refused naming itself, before binning, with nothing cached.


def write_gesture_npy(root: Path, rows_by_split: dict[str, dict[str, np.ndarray]]) -> None:
    """tonic's layout: ``ibmGesture{Train,Test}/<user>/<class>.npy`` arrays of x, y, p, t (ms)."""
    for split, files in rows_by_split.items():
        folder = root / split / "user01_led"
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in files.items():
            np.save(folder / name, rows)


def good_gesture(label: int = 0) -> np.ndarray:
    return np.stack([np.full(20, 4 * label), np.arange(20), np.ones(20), np.arange(20.0) * 10], 1)


def gesture_module(root: Path, **kwargs) -> DVSGestureDataModule:
    args = dict(data_dir=str(root), download=False, input_shape=(5, 2, 32, 32), T=5, num_classes=3,
                frames={"bin_width": 0.1, "duration": 0.5, "downsample": 4}, val_size=1)
    return DVSGestureDataModule(**{**args, **kwargs})


def cache_entries(root: Path) -> list[str]:
    """Every entry and temporary folder in the cache (the names of what was written)."""
    cache = root / "event_cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# x, y, p, t (ms) of one event that is not on the 128 x 128, 2-polarity sensor or not a time.
HOSTILE_EVENTS = {
    "x beyond the sensor": ([200, 3, 1, 5.0], r"x \(column\) outside 0\.\.127"),
    "negative x": ([-1, 3, 1, 5.0], r"x \(column\) outside 0\.\.127"),
    "y that wraps in int16": ([3, 40000, 1, 5.0], r"y \(row\) outside 0\.\.127"),
    "polarity 5": ([3, 3, 5, 5.0], r"p \(polarity\) outside 0\.\.1"),
    "fractional x": ([3.5, 3, 1, 5.0], "not finite whole numbers"),
    "NaN time": ([3, 3, 1, np.nan], "not finite whole numbers"),
    "time 1e30 ms": ([3, 3, 1, 1e30], r"t \(microseconds\) outside"),
}


@pytest.mark.parametrize("case", HOSTILE_EVENTS)
def test_tonic_npy_events_off_the_sensor_are_refused_naming_the_file_and_never_cached(tmp_path, case):
    row, message = HOSTILE_EVENTS[case]
    bad = np.concatenate([good_gesture(1), np.array([row], dtype=np.float64)])
    write_gesture_npy(tmp_path, {"ibmGestureTrain": {"0.npy": good_gesture(0), "1.npy": bad},
                                 "ibmGestureTest": {"0.npy": good_gesture(0)}})
    path = tmp_path / "ibmGestureTrain" / "user01_led" / "1.npy"
    with pytest.raises(DataError, match=f"{path}: 1 event|{path}: the") as error:
        gesture_module(tmp_path).setup()
    assert re.search(message, str(error.value))
    assert cache_entries(tmp_path) == []  # no entry, no temporary folder


def npy_header(shape: tuple[int, ...], pad: int = 0) -> bytes:
    """A version 2.0 .npy header for float64 ``shape`` (``pad`` spaces of padding)."""
    text = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}".encode() + b" " * pad
    text += b" " * (-(len(text) + 13) % 64) + b"\n"
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text


@pytest.mark.parametrize("case", ["non-integer name", "huge header", "declares more rows", "object array",
                                  "label beyond num_classes"])
def test_malformed_tonic_npy_files_are_refused_naming_the_file(tmp_path, case):
    folder = tmp_path / "ibmGestureTrain" / "user01_led"
    write_gesture_npy(tmp_path, {"ibmGestureTrain": {"0.npy": good_gesture(0)},
                                 "ibmGestureTest": {"0.npy": good_gesture(0)}})
    path = folder / {"non-integer name": "zero.npy", "label beyond num_classes": "7.npy"}.get(case, "1.npy")
    if case in ("non-integer name", "label beyond num_classes"):
        np.save(path, good_gesture(1))
    elif case == "huge header":
        path.write_bytes(npy_header((20, 4), pad=200_000) + good_gesture().tobytes())
    elif case == "declares more rows":  # 10^12 events declared, 20 stored
        path.write_bytes(npy_header((10**12, 4)) + good_gesture().tobytes())
    else:
        np.save(path, np.array([[1, 2, 3, "x"]], dtype=object), allow_pickle=True)
    expected = {"non-integer name": "not a class number", "huge header": "not a readable .npy file",
                "declares more rows": "declares 1000000000000 events", "object array": "holds a object array",
                "label beyond num_classes": r"label 7 outside 0\.\.2"}[case]
    with pytest.raises(DataError, match=f"{re.escape(str(path))}.*{expected}"):
        gesture_module(tmp_path).setup()
    assert cache_entries(tmp_path) == []


def write_h5_raw(path: Path, times: list, units: list, labels: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        t = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(np.float64))
        u = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.uint16))
        for i in range(len(times)):
            t[i], u[i] = times[i], units[i]
        f.create_dataset("labels", data=labels)


def shd_module(root: Path, **kwargs) -> SHDDataModule:
    args = dict(data_dir=str(root), download=False, input_shape=(10, 140), T=10, num_classes=3, val_size=1,
                frames={"bin_width": 0.01, "duration": 0.1, "downsample": 5})
    return SHDDataModule(**{**args, **kwargs})


@pytest.mark.parametrize("case", ["time 1e14 s", "NaN label", "bytes label", "negative time", "unit 700"])
def test_shd_samples_that_would_wrap_or_cannot_be_labels_are_refused_naming_file_and_sample(tmp_path, case):
    make_shd(tmp_path, n_train=6, n_test=2)
    rng = np.random.default_rng(0)
    samples = [random_audio(rng, i % 3) for i in range(4)]
    times, units = [s[0] for s in samples], [s[1] for s in samples]
    labels = np.array([0, 1, 2, 0], dtype=np.uint16)
    if case == "time 1e14 s":  # 1e20 us: past int64, it would wrap negative
        times[2] = np.array([0.01, 1e14])
        units[2] = np.array([3, 4])
    elif case == "negative time":
        times[2] = np.array([-0.5])
        units[2] = np.array([3])
    elif case == "unit 700":
        units[2] = units[2].copy()
        units[2][0] = 700
    elif case == "NaN label":
        labels = np.array([0, 1, np.nan, 0])
    else:
        labels = np.array([b"0", b"1", b"2", b"0"])
    path = tmp_path / "shd_train.h5"
    path.unlink()
    write_h5_raw(path, times, units, labels)
    expected = {"time 1e14 s": r"sample 2: 1 event\(s\) have t", "negative time": r"sample 2: 1 event\(s\) have t",
                "unit 700": r"sample 2: 1 event\(s\) have x", "NaN label": "sample 2: label nan",
                "bytes label": "labels of dtype"}[case]
    with pytest.raises(DataError, match=f"{re.escape(str(path))}.*{expected}"):
        shd_module(tmp_path).setup()
    assert cache_entries(tmp_path) == []


@pytest.mark.parametrize("case", ["nothing stored", "labels short"])
def test_an_hdf5_file_declaring_more_samples_than_it_stores_is_refused_before_reading(tmp_path, case):
    path = tmp_path / "shd_train.h5"
    n = 10**8 if case == "nothing stored" else 5000
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        labels = f.create_dataset("labels", (n,), dtype=np.uint16, chunks=(1000,))
        if case == "labels short":  # every sample's spikes, but labels for the first 1000 only
            times[:] = [np.array([0.01], np.float32)] * n
            units[:] = [np.array([3], np.uint16)] * n
            labels[:1000] = 0
    expected = {"nothing stored": r"/spikes/times declares 100000000 samples but stores 0 bytes",
                "labels short": r"/labels declares 5000 samples but stores 2000 bytes, not the 10000"}[case]
    if case == "nothing stored":
        assert path.stat().st_size < 10_000  # what the 2,976-byte file was
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is truncated or corrupt: {expected}"):
        next(read_hdf5(path))


def test_a_cache_hit_checks_the_labels_against_num_classes(tmp_path):
    make_shd(tmp_path, n_train=6, n_test=3, classes=3)
    shd_module(tmp_path).setup()  # labels 0..2 cached
    entries = cache_entries(tmp_path)
    with pytest.raises(DataError, match=r"labels span 0\.\.2, outside 0\.\.1 \(dataset.num_classes 2\).*event_cache"):
        shd_module(tmp_path, num_classes=2).setup()
    assert cache_entries(tmp_path) == entries  # nothing written


def test_cache_entries_follow_the_umask(tmp_path):
    make_shd(tmp_path, n_train=6, n_test=3, classes=3)
    old = os.umask(0o002)  # a group-shared cache
    try:
        shd_module(tmp_path).setup()
    finally:
        os.umask(old)
    entries = [p for p in (tmp_path / "event_cache").iterdir()]
    assert entries and all(stat.S_IMODE(p.stat().st_mode) == 0o775 for p in entries)
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o664 for p in entries for f in p.iterdir())


def test_a_build_killed_by_sigkill_leaves_a_folder_the_next_build_removes(tmp_path):
    root = tmp_path / "cache"
    code = (
        "import sys, time, numpy as np\n"
        "from snn.data.cache import load_or_build\n"
        "def samples():\n"
        "    yield np.zeros(3, np.int64), 1, 0\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(600)\n"
        f"load_or_build({str(root)!r}, 'killed', {{}}, np.int64, samples())\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
    [left] = [p for p in root.iterdir() if p.name.startswith(".killed-")]
    assert f".{child.pid}." in left.name
    # A live build beside it (this process) and a fresh one from another host are left alone;
    # another host's folder untouched for longer than STALE_SECONDS is removed.
    live = root / f".live-0123.{cache_module.host()}.{os.getpid()}.0badc0de"
    other = root / ".other-0123.elsewhere.12345.0badc0de"
    old = root / ".old-0123.elsewhere.12345.0badc0de"
    for folder in (live, other, old):
        folder.mkdir()
    stale = time.time() - cache_module.STALE_SECONDS - 60
    os.utime(old, (stale, stale))
    cache_module.load_or_build(root, "next", {}, np.dtype(np.int64), iter([(np.zeros(2, np.int64), 1, 0)]))
    assert sorted(p.name for p in root.iterdir()) == sorted([live.name, other.name, "next-" + cache_module
                                                             .settings_key({})])


@pytest.mark.parametrize("seconds, limit_gb, message", [
    (1e6, None, r"sample 1: 100000001 frames of 1x1x140 exceed the sparse index range"),
    (1e4, 0.1, r"sample 1: The 1000001 frames of one sample would allocate .*SNN_MAX_ALLOC_GB"),
])
def test_a_sample_whose_frames_would_be_too_many_is_refused_naming_it(tmp_path, monkeypatch, seconds, limit_gb,
                                                                       message):
    make_shd(tmp_path, n_train=6, n_test=2)
    rng = np.random.default_rng(0)
    samples = [random_audio(rng, i % 3) for i in range(4)]
    samples[1] = (np.array([0.0, seconds]), np.array([1, 2]), 1)  # bins of 10 ms up to its last spike
    write_h5(tmp_path / "shd_train.h5", samples)
    if limit_gb:
        monkeypatch.setenv("SNN_MAX_ALLOC_GB", str(limit_gb))
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path / 'shd_train.h5'))} {message}"):
        shd_module(tmp_path, input_shape=(None, 140), T=None, frames={"bin_width": 0.01, "downsample": 5}).setup()
    assert cache_entries(tmp_path) == []


def test_a_batch_of_frames_beyond_the_limit_is_refused_from_the_config(tmp_path):
    with pytest.raises(ValueError, match=r"batch of SHD frames \[1000000, 140\].*dataset.batch_size.*SNN_MAX"):
        shd_module(tmp_path, input_shape=(10**6, 140), T=10**6, frames={"time_bins": 10**6, "downsample": 5},
                   batch_size=64)


@pytest.mark.parametrize("case", sorted(HOSTILE_HDF5))
def test_shd_files_that_read_outside_themselves_or_loop_are_refused_naming_the_node(tmp_path, case):
    """The labels taken from another file's bytes (external raw storage), another HDF5 file (virtual
    dataset, external link), or a file that loops: refused by the reader, naming file and node, before
    any sample is read, and nothing is cached."""
    make_shd(tmp_path, n_train=6, n_test=2)
    path = tmp_path / "shd_train.h5"
    node = plant(path, "labels" if case in ("external storage", "virtual dataset", "external link")
                 else "spikes/times", case)
    expected = f"{re.escape(str(path))} is not a self-contained SHD/SSC file: node '{re.escape(node)}.*"
    with pytest.raises(DataError, match=expected + HOSTILE_HDF5[case]):
        next(read_hdf5(path))
    with pytest.raises(DataError, match=expected + HOSTILE_HDF5[case]):
        shd_module(tmp_path).setup()
    assert cache_entries(tmp_path) == []
