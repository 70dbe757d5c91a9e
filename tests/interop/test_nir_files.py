"""NIR files as a careless or hostile user may hand them over: sizes are checked from the HDF5
datasets' declared shapes before anything is read, and non-finite values are refused by name."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")
h5py = pytest.importorskip("h5py")

import snn  # noqa: E402
import snn.interop.nir_import as snn_nir  # noqa: E402
from snn.interop import SpikingSequential  # noqa: E402
from snn.neurons import LIF, LIFParameters  # noqa: E402
from tests.hostile_hdf5 import CASES, plant  # noqa: E402


def write_graph(tmp_path, name="net.nir"):
    torch.manual_seed(0)
    net = SpikingSequential(nn.Linear(3, 4), LIF(LIFParameters(v_th=0.3)))
    path = tmp_path / name
    nir.write(path, snn.export_nir(net, torch.zeros(1, 3)))
    return path, net


def declare(path, dataset, shape, dtype="f8"):
    """Replace ``dataset`` by one that declares ``shape`` and stores nothing (a few KB on disk)."""
    with h5py.File(path, "r+") as f:
        del f[dataset]
        f.create_dataset(dataset, shape=shape, dtype=dtype, chunks=True, compression="gzip")


@pytest.fixture
def no_read(monkeypatch):
    """nir.read fails the test: whatever is refused must be refused before the file is read."""
    def read(*args, **kwargs):
        raise AssertionError("nir.read was called before the size check refused the file")
    monkeypatch.setattr(snn_nir.nir, "read", read)


@pytest.mark.parametrize("n", [12000, 60000])
def test_declared_huge_weights_are_refused_before_reading(tmp_path, no_read, n):
    path, _ = write_graph(tmp_path)
    declare(path, "node/nodes/0/weight", (n, n))
    assert path.stat().st_size < 2**20  # the file is small; what it declares is not
    gib = n * n * 8 / 2**30
    with pytest.raises(ValueError, match=rf"net.nir.*'node/nodes/0/weight', shape \[{n}, {n}\] "
                                         rf"float64, {gib * 1024:.1f} MiB.*max_bytes=\d+.*"
                                         r"Nothing was read.*import_nir\(path, max_bytes="):
        snn.import_nir(str(path))


def test_the_limit_is_a_parameter(tmp_path):
    path, net = write_graph(tmp_path)
    with h5py.File(path) as f:
        size = sum(f[k].size * f[k].dtype.itemsize for k in ("node/nodes/0/weight", "node/nodes/0/bias"))
    with pytest.raises(ValueError, match="max_bytes=64 "):
        snn.import_nir(path, max_bytes=64)
    imported = snn.import_nir(path, max_bytes=10 * size)  # raised: the file is read as usual
    x = torch.rand(10, 2, 3) * 5
    with torch.no_grad():
        assert torch.equal(imported(x), net(x))


def test_links_to_other_files_and_non_hdf5_files_are_refused(tmp_path, no_read):
    path, _ = write_graph(tmp_path)
    other, _ = write_graph(tmp_path, "other.nir")
    with h5py.File(path, "r+") as f:
        del f["node/nodes/0/weight"]
        f["node/nodes/0/weight"] = h5py.ExternalLink(str(other), "node/nodes/0/weight")
    with pytest.raises(ValueError, match=r"net.nir: node '/node/nodes/0/weight' is an external link to another file"):
        snn.import_nir(path)
    garbage = tmp_path / "garbage.nir"
    garbage.write_bytes(b"not hdf5" * 10)
    with pytest.raises(ValueError, match="garbage.nir: not a readable NIR"):
        snn.import_nir(garbage)


@pytest.mark.parametrize(("node", "field", "value", "message"), [
    ("0", "weight", np.nan, "non-finite"),
    ("0", "bias", np.inf, "non-finite"),
    ("1", "r", np.nan, "non-finite"),
    ("1", "v_threshold", np.nan, "non-finite"),
    ("1", "tau_mem", np.inf, "non-finite"),
    ("1", "tau_syn", -1e-3, "must be positive"),
])
def test_non_finite_values_are_refused_with_node_and_field(tmp_path, node, field, value, message):
    path, _ = write_graph(tmp_path)
    with h5py.File(path, "r+") as f:
        data = f[f"node/nodes/{node}/{field}"][()]
        data.flat[1] = value
        f[f"node/nodes/{node}/{field}"][...] = data
    pattern = rf"net.nir: node '{node}' \((Affine|CubaLIF)\) field '{field}'.*{message}"
    with pytest.raises(ValueError, match=pattern):
        snn.import_nir(path)
    graph = nir.read(path)  # the same check on a graph in memory, inside a recurrent sub-graph too
    with pytest.raises(ValueError, match=rf"graph: node '{node}'"):
        snn.import_nir(graph)
    sub = nir.NIRGraph(nodes={"inner": graph}, edges=[], type_check=False)
    with pytest.raises(ValueError, match=rf"node 'inner.{node}'"):
        snn_nir._check_values(sub, "graph")


def test_neuron_fields_of_different_shapes_are_refused_before_broadcasting(tmp_path):
    """r [N, 1] and w_in [1, N] are 2N numbers and N^2 once multiplied: nir refuses such a node
    when it reads a file (named here), and import_nir refuses a graph changed in memory."""
    path, _ = write_graph(tmp_path)
    graph = nir.read(path)
    with h5py.File(path, "r+") as f:
        for field, shape in (("r", (4, 1)), ("w_in", (1, 4))):
            del f[f"node/nodes/1/{field}"]
            f[f"node/nodes/1/{field}"] = np.ones(shape)
    with pytest.raises(ValueError, match=r"net.nir: not a NIR graph .*same shape"):
        snn.import_nir(path)
    graph.nodes["1"].r, graph.nodes["1"].w_in = np.ones((4, 1)), np.ones((1, 4))
    with pytest.raises(ValueError, match=r"node '1' \(CubaLIF\) has per-neuron fields of different "
                                         r"shapes.*'r': \(4, 1\).*'w_in': \(1, 4\)"):
        snn.import_nir(graph)


def test_files_nir_cannot_read_are_refused_with_the_path(tmp_path):
    path = tmp_path / "empty.nir"
    with h5py.File(path, "w") as f:
        f["version"] = "1.0"
    with pytest.raises(ValueError, match=r"empty.nir: not a NIR graph that nir .* can read"):
        snn.import_nir(path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_files_that_read_outside_themselves_or_loop_are_refused_naming_the_node(tmp_path, no_read, case):
    """External raw storage would import another file's bytes as weights, a virtual dataset another
    HDF5 file's, an external link opens another file; a soft link to a group, a soft-link loop and a
    hard-link cycle sent nir's recursive reader into a RecursionError. All refused before nir.read,
    naming the node."""
    path, _ = write_graph(tmp_path)
    node = plant(path, "node/nodes/0/weight", case)
    with pytest.raises(ValueError, match=rf"net.nir: node '{re.escape(node)}.*{CASES[case]}.*self-contained"):
        snn.import_nir(path)


def test_a_soft_link_to_a_dataset_is_read_as_that_dataset(tmp_path):
    """A soft link to a dataset cannot loop and stays inside the file: accepted."""
    path, net = write_graph(tmp_path)
    with h5py.File(path, "r+") as f:
        f["stored_weight"] = f["node/nodes/0/weight"][()]  # outside the graph nir.read reads
        del f["node/nodes/0/weight"]
        f["node/nodes/0/weight"] = h5py.SoftLink("/stored_weight")
    imported = snn.import_nir(path)
    x = torch.rand(10, 2, 3) * 5
    with torch.no_grad():
        assert torch.equal(imported(x), net(x))
