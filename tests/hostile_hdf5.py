"""HDF5 files that read outside themselves or loop: each case plants one such node in a file that is
otherwise valid, for the NIR importer's and the SHD/SSC readers' tests (snn.hdf5_structure)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

# case -> the start of what the refusal says about the node
CASES = {
    "external storage": "stores its elements in another file",
    "virtual dataset": "is a virtual dataset",
    "external link": "is an external link to another file",
    "soft link cycle": "is a soft link to the group",
    "soft link loop": "which does not resolve",
    "dangling soft link": "which does not resolve",
    "hard link cycle": "is a second hard link to the group",
    "deep nesting": "groups deep",
}


def plant(path: Path, dataset: str, case: str) -> str:
    """Replace ``dataset`` (a 1-d or 2-d array of ``path``) or add a node beside it by ``case`` (one of
    :data:`CASES`); returns the path of the planted node. ``external storage`` and ``virtual dataset``
    keep the dataset's shape and dtype and take its elements from a file beside ``path`` (a plain
    file of bytes, another HDF5 file): a reader that does not refuse them imports those bytes."""
    other = path.parent / f"other-{case.replace(' ', '-')}"
    with h5py.File(path, "r+") as f:
        group = dataset.rpartition("/")[0]
        if case in ("external storage", "virtual dataset", "external link"):
            original = f[dataset]
            shape, dtype, values = original.shape, original.dtype, original[()]
            del f[dataset]
            if case == "external storage":
                other.write_bytes(np.full(shape, 7, dtype).tobytes())
                f.create_dataset(dataset, shape=shape, dtype=dtype,
                                 external=[(str(other), 0, int(np.prod(shape)) * dtype.itemsize)])
            elif case == "virtual dataset":
                with h5py.File(other, "w") as source:
                    source["x"] = np.full(shape, 7, dtype)
                layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
                layout[...] = h5py.VirtualSource(str(other), "x", shape=shape)
                f.create_virtual_dataset(dataset, layout)
            else:
                with h5py.File(other, "w") as source:
                    source["x"] = values
                f[dataset] = h5py.ExternalLink(str(other), "x")
            return "/" + dataset
        planted = f"{group}/planted"
        if case == "soft link cycle":
            f[planted] = h5py.SoftLink("/" + group)
        elif case == "soft link loop":
            f[planted] = h5py.SoftLink(f"/{group}/planted2")
            f[f"{group}/planted2"] = h5py.SoftLink("/" + planted)
        elif case == "dangling soft link":
            f[planted] = h5py.SoftLink("/nowhere")
        elif case == "hard link cycle":
            f[planted] = f[group]
        elif case == "deep nesting":
            node = f.require_group(planted)
            for _ in range(80):
                node = node.create_group("g")
        else:
            raise ValueError(case)
        return "/" + planted
