from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_geometric.nn as gnn

from mesh_decoder.nn import PyGConv, mesh_edge_index
from mesh_decoder.nn.pyg_conv import BATCHED_CONVS
from tests.nn.reference import edge_set, grid_mesh, icosahedron, make_test_hierarchy

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

C, O = 3, 4

# One constructor per class claimed to batch correctly, plus the attention/pseudo-coordinate ones.
FACTORIES = {
    "ChebConv": lambda: gnn.ChebConv(C, O, K=3),
    "GCNConv": lambda: gnn.GCNConv(C, O),
    "SAGEConv": lambda: gnn.SAGEConv(C, O),
    "GraphConv": lambda: gnn.GraphConv(C, O),
    "TAGConv": lambda: gnn.TAGConv(C, O, K=2),
    "SGConv": lambda: gnn.SGConv(C, O, K=2),
    "SSGConv": lambda: gnn.SSGConv(C, O, alpha=0.2, K=2),
    "LEConv": lambda: gnn.LEConv(C, O),
    "ResGatedGraphConv": lambda: gnn.ResGatedGraphConv(C, O),
    "MFConv": lambda: gnn.MFConv(C, O),
    "LGConv": lambda: gnn.LGConv(),
    "ClusterGCNConv": lambda: gnn.ClusterGCNConv(C, O),
}


def _mesh(kind: str = "grid"):
    verts, faces = grid_mesh(4, 4) if kind == "grid" else icosahedron()
    return faces, verts.shape[0]


def _per_sample(conv, x, edge_index):
    return torch.stack([conv(x[b], edge_index) for b in range(x.shape[0])])


# --------------------------------------------------------------------------- mesh_edge_index
@pytest.mark.parametrize("kind", ["grid", "ico"])
def test_mesh_edge_index_matches_set_reference(kind):
    faces, V = _mesh(kind)
    ei = mesh_edge_index(faces, V)
    assert ei.dtype == torch.int64 and ei.shape[0] == 2
    pairs = [tuple(p) for p in ei.t().tolist()]
    assert pairs == sorted(edge_set(faces))  # sorted, unique, both directions
    assert len(pairs) == (2 * 30 if kind == "ico" else 2 * (2 * 3 * 4 + 9))


def test_mesh_edge_index_drops_self_loops_and_accepts_numpy_and_polygons():
    faces = np.array([[0, 1, 2], [2, 2, 3], [0, 1, 2]])  # a degenerate face and a duplicate
    ei = mesh_edge_index(faces, 5)
    assert {tuple(p) for p in ei.t().tolist()} == {(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0), (2, 3), (3, 2)}
    quads = torch.tensor([[0, 1, 2, 3]])
    assert {tuple(p) for p in mesh_edge_index(quads, 4).t().tolist()} == edge_set(quads)
    assert mesh_edge_index(torch.zeros(0, 3, dtype=torch.int64), 4).shape == (2, 0)


def test_mesh_edge_index_errors():
    faces, V = _mesh()
    with pytest.raises(ValueError, match=r"expected vertex indices in \[0, 10\), got range \[0, 15\]"):
        mesh_edge_index(faces, 10)
    with pytest.raises(TypeError, match="expected an integer tensor, got dtype torch.float32"):
        mesh_edge_index(faces.float(), V)
    with pytest.raises(ValueError, match=r"expected shape \(F, k\), got \(54,\)"):
        mesh_edge_index(faces.reshape(-1), V)


# --------------------------------------------------------------------------- modes
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_known_good_classes_batch_like_a_loop(name):
    """Every class `auto` sends to batched mode gives the per-sample result, forward and backward."""
    assert name in BATCHED_CONVS
    torch.manual_seed(40)
    faces, V = _mesh()
    layer = PyGConv(FACTORIES[name](), mesh_edge_index(faces, V), V)
    assert layer.mode == "batched"
    gen = torch.Generator().manual_seed(41)
    x = torch.randn(3, V, layer.conv.in_channels if name != "LGConv" else O, generator=gen, requires_grad=True)
    out = layer(x)
    ref = _per_sample(layer.conv, x, layer.edge_index)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    go = torch.randn(out.shape, generator=gen)
    params = [x] + list(layer.conv.parameters())
    for g, w in zip(torch.autograd.grad(out, params, go), torch.autograd.grad(ref, params, go)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_every_batched_class_is_tested():
    assert set(FACTORIES) == set(BATCHED_CONVS)


@pytest.mark.parametrize("make", [lambda: gnn.GCNConv(C, O), lambda: gnn.SAGEConv(C, O),
                                  lambda: gnn.ChebConv(C, O, K=3), lambda: gnn.SAGEConv(C, O, aggr="max")])
def test_batched_and_union_modes_agree(make):
    torch.manual_seed(42)
    faces, V = _mesh("ico")
    conv = make()
    ei = mesh_edge_index(faces, V)
    batched, union = PyGConv(conv, ei, V, mode="batched"), PyGConv(conv, ei, V, mode="union")
    gen = torch.Generator().manual_seed(43)
    x = torch.randn(4, V, C, generator=gen, requires_grad=True)
    a, b = batched(x), union(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    go = torch.randn(a.shape, generator=gen)
    torch.testing.assert_close(torch.autograd.grad(a, x, go)[0], torch.autograd.grad(b, x, go)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: gnn.GATConv(C, O, heads=2), lambda: gnn.FeaStConv(C, O, heads=3),
                                  lambda: gnn.GATv2Conv(C, O)])
def test_union_mode_for_attention_convs_matches_loop(make):
    torch.manual_seed(44)
    faces, V = _mesh("grid")
    layer = PyGConv(make(), mesh_edge_index(faces, V), V)
    assert layer.mode == "union"
    gen = torch.Generator().manual_seed(45)
    x = torch.randn(3, V, C, generator=gen, requires_grad=True)
    out = layer(x)
    ref = _per_sample(layer.conv, x, layer.edge_index)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    go = torch.randn(out.shape, generator=gen)
    params = [x] + list(layer.conv.parameters())
    for g, w in zip(torch.autograd.grad(out, params, go), torch.autograd.grad(ref, params, go)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_auto_mode_rules():
    faces, V = _mesh()
    ei = mesh_edge_index(faces, V)
    assert PyGConv(gnn.GCNConv(C, O), ei, V).mode == "batched"
    assert PyGConv(gnn.SAGEConv(C, O, aggr="lstm"), ei, V).mode == "union"  # not a simple aggregation
    assert PyGConv(gnn.GINConv(torch.nn.Linear(C, O)), ei, V).mode == "union"  # user network inside

    class MyGCN(gnn.GCNConv):
        pass

    assert PyGConv(MyGCN(C, O), ei, V).mode == "union"  # subclasses are not trusted
    assert PyGConv(gnn.GATConv(C, O), ei, V, mode="batched").mode == "batched"  # explicit wins


def test_batched_mode_on_an_unsuitable_conv_says_so():
    """A conv that flattens the batch in batched mode gets the layer's own message, naming the fix."""

    class Flattening(torch.nn.Module):  # treats (B, V, C) as B*V nodes, as node-level convs do
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(C, O)

        def forward(self, x, edge_index):
            return self.lin(x.reshape(-1, x.shape[-1]))  # (B*V, O)

    faces, V = _mesh()
    layer = PyGConv(Flattening(), mesh_edge_index(faces, V), V, mode="batched")
    with pytest.raises(RuntimeError, match=rf"Flattening in 'batched' mode: expected an output of shape "
                                           rf"\(2, {V}, C_out\), got \({2 * V}, {O}\); try mode='union'"):
        layer(torch.randn(2, V, C))
    union = PyGConv(Flattening(), mesh_edge_index(faces, V), V, mode="union")
    union.conv.load_state_dict(layer.conv.state_dict())
    x = torch.randn(2, V, C)
    torch.testing.assert_close(union(x), layer.conv.lin(x))


@pytest.mark.parametrize("mode", ["batched", "union"])
def test_empty_batch_decodes_to_an_empty_batch(mode):
    faces, V = _mesh()
    conv = gnn.GCNConv(C, O) if mode == "batched" else gnn.GATConv(C, O)
    layer = PyGConv(conv, mesh_edge_index(faces, V), V)
    assert layer.mode == mode
    out = layer(torch.randn(0, V, C))
    assert out.shape == (0, V, O)


def test_union_edges_are_each_calls_batch_when_another_call_comes_between():
    """The cache kept the batch size and the edges in two attributes: a call coming between the two writes
    (another thread's) got another batch's edges (asked for 1, given 2 copies'), dropping messages."""
    seen: list[torch.Tensor] = []

    class Interleaved(PyGConv):
        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if name == "union_edge_index" and self.__dict__.get("_interleave"):
                self.__dict__["_interleave"] = False
                seen.append(self.union_edges(1))  # as if another thread ran right after the write

    faces, V = _mesh()
    layer = Interleaved(gnn.GATConv(C, O), mesh_edge_index(faces, V), V)
    E = layer.num_edges
    assert layer.union_edges(1).shape == (2, E)
    layer.__dict__["_interleave"] = True
    two = layer.union_edges(2)
    assert len(seen) == 1
    assert seen[0].shape == (2, E) and torch.equal(seen[0], layer.edge_index)
    assert two.shape == (2, 2 * E) and torch.equal(two[:, E:], layer.edge_index + V)


def test_union_edges_cached_per_batch_size():
    faces, V = _mesh()
    layer = PyGConv(gnn.GATConv(C, O), mesh_edge_index(faces, V), V)
    u2 = layer.union_edges(2)
    assert layer.union_edges(2) is u2
    E = layer.num_edges
    assert u2.shape == (2, 2 * E)
    assert torch.equal(u2[:, :E], layer.edge_index) and torch.equal(u2[:, E:], layer.edge_index + V)
    u3 = layer.union_edges(3)
    assert u3.shape == (2, 3 * E) and torch.equal(u3[:, 2 * E:], layer.edge_index + 2 * V)
    assert "union_edge_index" not in layer.state_dict()
    layer.to("meta")
    assert layer.union_edge_index.device.type == "meta"
    assert layer.union_edges(3).device.type == "meta"


def test_unbatched_equals_batch_of_one():
    faces, V = _mesh()
    for mode in ("batched", "union"):
        torch.manual_seed(46)
        layer = PyGConv(gnn.GATConv(C, O) if mode == "union" else gnn.GCNConv(C, O), mesh_edge_index(faces, V), V,
                        mode=mode)
        x = torch.randn(V, C, generator=torch.Generator().manual_seed(47))
        torch.testing.assert_close(layer(x[None]).squeeze(0), layer(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["batched", "union"])
def test_gradcheck_float64(mode):
    torch.manual_seed(48)
    faces, V = _mesh("ico")
    layer = PyGConv(gnn.GCNConv(2, 2), mesh_edge_index(faces, V), V, mode=mode).double()
    x = torch.randn(2, V, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(49), requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_wrapping_keeps_the_conv_weights():
    faces, V = _mesh()
    conv = gnn.GCNConv(C, O)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    layer = PyGConv(conv, mesh_edge_index(faces, V), V)
    assert all(torch.equal(v, conv.state_dict()[k]) for k, v in before.items())
    torch.manual_seed(58)
    layer.reset_parameters()
    assert not torch.equal(conv.lin.weight, before["lin.weight"])


def test_state_dict_round_trip():
    faces, V = _mesh()
    torch.manual_seed(50)
    layer = PyGConv(gnn.SAGEConv(C, O), mesh_edge_index(faces, V), V)
    x = torch.randn(2, V, C, generator=torch.Generator().manual_seed(51))
    sd = layer.state_dict()
    assert "edge_index" in sd
    relabelled = torch.randperm(V, generator=torch.Generator().manual_seed(57))[faces]  # same edge count
    fresh = PyGConv(gnn.SAGEConv(C, O), mesh_edge_index(relabelled, V), V)
    assert not torch.equal(fresh.edge_index, layer.edge_index)
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.edge_index, layer.edge_index)
    assert torch.equal(fresh(x), layer(x))


def test_union_mode_follows_a_loaded_graph():
    """A loaded state dict with another graph (same edge count) rebuilds the cached union edges."""
    faces, V = _mesh()
    torch.manual_seed(59)
    relabelled = torch.randperm(V, generator=torch.Generator().manual_seed(60))[faces]
    layer = PyGConv(gnn.GATConv(C, O), mesh_edge_index(faces, V), V, mode="union")
    other = PyGConv(gnn.GATConv(C, O), mesh_edge_index(relabelled, V), V, mode="union")
    x = torch.randn(2, V, C, generator=torch.Generator().manual_seed(61))
    layer(x)  # caches the union edges of a batch of 2
    layer.load_state_dict(other.state_dict())
    torch.testing.assert_close(layer(x), _per_sample(other.conv, x, other.edge_index), rtol=1e-5, atol=1e-5)


def test_from_hierarchy_and_repr():
    h = make_test_hierarchy(seed=52)
    layer = PyGConv.from_hierarchy(gnn.GCNConv(C, O), h, 1)
    lvl = h.levels[1]
    assert layer.num_vertices == lvl.num_vertices
    assert {tuple(p) for p in layer.edge_index.t().tolist()} == edge_set(lvl.faces)
    assert layer.extra_repr() == f"num_vertices=9, num_edges={layer.num_edges}, mode='batched'"
    assert "GCNConv(3, 4)" in repr(layer)


def test_errors_name_expected_and_actual():
    faces, V = _mesh()
    ei = mesh_edge_index(faces, V)
    layer = PyGConv(gnn.GCNConv(C, O), ei, V)
    with pytest.raises(ValueError, match=r"expected shape \(B, 16, 3\), got \(2, 15, 3\)"):
        layer(torch.randn(2, 15, C))
    with pytest.raises(ValueError, match=r"expected shape \(B, 16, 3\), got \(2, 16, 5\)"):
        layer(torch.randn(2, V, 5))
    with pytest.raises(TypeError, match="expected dtype torch.float32, got torch.float64"):
        layer(torch.randn(2, V, C, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected a tensor on cpu, got one on meta"):
        layer(torch.randn(2, V, C, device="meta"))
    with pytest.raises(ValueError, match=r"mode: expected one of \('auto', 'batched', 'union'\), got 'loop'"):
        PyGConv(gnn.GCNConv(C, O), ei, V, mode="loop")
    with pytest.raises(ValueError, match=r"edge_index: expected vertex indices in \[0, 8\), got range \[0, 15\]"):
        PyGConv(gnn.GCNConv(C, O), ei, 8)
    with pytest.raises(TypeError, match="conv: expected a torch.nn.Module"):
        PyGConv(lambda x, e: x, ei, V)


@pytest.mark.parametrize("device", DEVICES)
def test_to_device(device):
    faces, V = _mesh()
    torch.manual_seed(53)
    layer = PyGConv(gnn.GATConv(C, O), mesh_edge_index(faces, V), V)
    x = torch.randn(2, V, C, generator=torch.Generator().manual_seed(54))
    want = layer(x)
    layer.to(device)
    assert layer.edge_index.device.type == device and layer.union_edge_index.device.type == device
    torch.testing.assert_close(layer(x.to(device)).cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    faces, V = _mesh()
    torch.manual_seed(55)
    layer = PyGConv(gnn.GCNConv(C, O), mesh_edge_index(faces, V), V)
    x = torch.randn(2, V, C, generator=torch.Generator().manual_seed(56))
    torch.testing.assert_close(torch.compile(layer)(x), layer(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- edge attributes
@pytest.mark.parametrize("kind, make", [
    ("cartesian", lambda: gnn.GMMConv(C, O, dim=3, kernel_size=4)),
    ("distance", lambda: gnn.GMMConv(C, O, dim=1, kernel_size=3)),
    ("spherical", lambda: gnn.NNConv(C, O, torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(),
                                                               torch.nn.Linear(8, C * O)))),
])
def test_pseudo_coordinate_convs_match_a_loop_with_the_edge_attributes(kind, make):
    """GMMConv, NNConv and the like take edge attributes: conv(x, edge_index, edge_attr) for every sample."""
    from mesh_decoder.nn.pyg_conv import pseudo_coordinates

    torch.manual_seed(46)
    verts, faces = grid_mesh(4, 5)
    verts = torch.as_tensor(verts, dtype=torch.float32) + 0.1 * torch.randn(verts.shape)
    V = verts.shape[0]
    edges = mesh_edge_index(faces, V)
    attr = pseudo_coordinates(kind, verts, edges)  # (E, D)
    layer = PyGConv(make(), edges, V, edge_attr=attr)
    assert layer.mode == "union" and "edge_attr_dim" in repr(layer)
    gen = torch.Generator().manual_seed(47)
    x = torch.randn(3, V, C, generator=gen, requires_grad=True)
    out = layer(x)
    ref = torch.stack([layer.conv(x[b], edges, attr) for b in range(3)])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    go = torch.randn(out.shape, generator=gen)
    params = [x] + list(layer.conv.parameters())
    for g, w in zip(torch.autograd.grad(out, params, go), torch.autograd.grad(ref, params, go)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x[1]), ref[1], rtol=1e-5, atol=1e-5)  # unbatched
    assert layer.double()(x.double()).dtype == torch.float64  # the attributes follow the module's dtype


@pytest.mark.parametrize("make, message", [
    (lambda D: gnn.GCNConv(C, O), r"takes edge attributes as conv\(x, edge_index, edge_attr\) .*got "
                                  r"GCNConv.forward\(x, edge_index, edge_weight\)"),
    (lambda D: gnn.SAGEConv(C, O), r"got SAGEConv.forward\(x, edge_index, size\)"),
    (lambda D: gnn.GATConv(C, O), r"GATConv uses edge attributes only with edge_dim set: expected edge_dim=3"),
    (lambda D: gnn.GATConv(C, O, edge_dim=D + 1), r"expected GATConv with edge_dim=3 .*got edge_dim=4"),
    (lambda D: gnn.GMMConv(C, O, dim=D - 1, kernel_size=2), r"expected GMMConv with dim=3 .*got dim=2"),
], ids=["gcn-edge-weights", "sage", "gat-without-edge-dim", "gat-other-size", "gmm-other-dim"])
def test_a_conv_that_would_not_use_the_edge_attributes_is_refused(make, message):
    """GCNConv took the pseudo-coordinates as edge weights (a shape error at the first call), SAGEConv as its
    size argument, and GATConv without edge_dim ignored them."""
    from mesh_decoder.nn.pyg_conv import pseudo_coordinates

    verts, faces = grid_mesh(3, 4)
    verts = torch.as_tensor(verts, dtype=torch.float32) + 0.1 * torch.randn(verts.shape)
    edges = mesh_edge_index(faces, verts.shape[0])
    attr = pseudo_coordinates("cartesian", verts, edges)  # (E, 3)
    with pytest.raises(ValueError, match=message):
        PyGConv(make(attr.shape[1]), edges, verts.shape[0], edge_attr=attr)
    PyGConv(gnn.GATConv(C, O, edge_dim=3), edges, verts.shape[0], edge_attr=attr)  # the right size is taken


@pytest.mark.parametrize("make, message", [
    (lambda: gnn.GMMConv(C, O, dim=3, kernel_size=2),
     r"^edge_attr: GMMConv needs edge attributes \(pseudo-coordinates\), got None; give edge_attr= \(PyGConv\) or "
     r"pseudo= \(PyGDecoder.from_hierarchy\)"),
    (lambda: gnn.NNConv(C, O, torch.nn.Linear(3, C * O)), r"^edge_attr: NNConv needs edge attributes"),
    (lambda: gnn.PointNetConv(), r"^conv: expected a convolution called as conv\(x, edge_index\), got "
                                 r"PointNetConv.forward\(x, pos, edge_index\); convolutions that need positions"),
], ids=["gmm", "nnconv", "pointnet"])
def test_a_conv_that_cannot_run_on_the_graph_alone_is_refused_when_wrapped(make, message):
    """GMMConv without pseudo-coordinates failed at the first call with an AttributeError inside PyG, and
    PointNetConv (which needs positions) with 'missing ... argument: edge_index', though one was passed."""
    verts, faces = grid_mesh(3, 4)
    edges = mesh_edge_index(faces, verts.shape[0])
    with pytest.raises(ValueError, match=message):
        PyGConv(make(), edges, verts.shape[0])
    for conv in (gnn.SAGEConv(C, O), gnn.GCNConv(C, O), gnn.GATConv(C, O), gnn.FeaStConv(C, O)):  # still taken
        PyGConv(conv, edges, verts.shape[0])


def test_pseudo_coordinates_are_the_scaled_edge_geometry():
    from mesh_decoder.nn.pyg_conv import pseudo_coordinates

    gen = torch.Generator().manual_seed(48)
    verts, faces = grid_mesh(3, 4)
    verts = torch.as_tensor(verts, dtype=torch.float32) + 0.2 * torch.rand(verts.shape, generator=gen)
    edges = mesh_edge_index(faces, verts.shape[0])
    d = verts[edges[0]] - verts[edges[1]]  # (E, 3)
    length = d.norm(dim=1, keepdim=True)
    torch.testing.assert_close(pseudo_coordinates("distance", verts, edges), length / length.max())
    cart = (pseudo_coordinates("cartesian", verts, edges) - 0.5) * 2 * d.abs().max()  # back to the edge vector
    assert torch.allclose(cart, d, atol=1e-5) or torch.allclose(cart, -d, atol=1e-5)
    with pytest.raises(ValueError, match=r"pseudo: expected one of \['cartesian', 'distance', 'spherical'\] or None"):
        pseudo_coordinates("polar", verts, edges)


def test_edge_attribute_errors():
    faces, V = _mesh("grid")
    edges = mesh_edge_index(faces, V)
    attr = torch.rand(edges.shape[1], 3)
    with pytest.raises(ValueError, match="mode: edge attributes need mode 'union'"):
        PyGConv(gnn.GMMConv(C, O, dim=3, kernel_size=2), edges, V, mode="batched", edge_attr=attr)
    with pytest.raises(ValueError, match=rf"edge_attr: expected shape \({edges.shape[1]}, D\)"):
        PyGConv(gnn.GMMConv(C, O, dim=3, kernel_size=2), edges, V, edge_attr=attr[1:])
    with pytest.raises(TypeError, match="edge_attr: expected a floating dtype"):
        PyGConv(gnn.GMMConv(C, O, dim=3, kernel_size=2), edges, V, edge_attr=attr.long())


def test_pseudo_coordinates_take_a_numpy_edge_index_and_name_a_bad_one():
    """hierarchy.mesh_edge_index gives numpy arrays: passing one raised AttributeError: no attribute 'cpu'."""
    from mesh_decoder.hierarchy import mesh_edge_index as numpy_edge_index
    from mesh_decoder.nn.pyg_conv import pseudo_coordinates

    verts, faces = grid_mesh(3, 4)
    verts = torch.as_tensor(verts, dtype=torch.float32) + 0.1 * torch.randn(verts.shape)
    edges = numpy_edge_index(faces, verts.shape[0])
    assert isinstance(edges, np.ndarray)
    for kind in ("cartesian", "distance"):
        assert torch.equal(pseudo_coordinates(kind, verts, edges), pseudo_coordinates(kind, verts, torch.as_tensor(edges)))
    with pytest.raises(TypeError, match=r"^edge_index: expected integer indices, got dtype torch.float64$"):
        pseudo_coordinates("cartesian", verts, edges.astype(np.float64))
    with pytest.raises(TypeError, match=r"^edge_index: expected a tensor or numpy array, got list$"):
        pseudo_coordinates("cartesian", verts, edges.tolist())
    with pytest.raises(ValueError, match=r"^edge_index: expected shape \(2, E\), got \(\d+, 2\)$"):
        pseudo_coordinates("cartesian", verts, edges.T)
