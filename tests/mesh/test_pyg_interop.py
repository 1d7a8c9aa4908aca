"""PyTorch Geometric conversion: layouts checked against PyG's own readers, collation and transforms."""

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.io import read_off, read_ply
from torch_geometric.loader import DataLoader
from torch_geometric.transforms import FaceToEdge

from mesh_decoder.mesh import PyGMeshes, from_pyg, mesh_from_pyg, mesh_to_pyg, save_mesh, to_pyg
from tests.conftest import random_grid_mesh


@pytest.fixture
def rng():
    return np.random.default_rng()


def _batch(rng, n: int, colors: int = 0):
    """A random grid mesh and ``n`` fresh random float32 vertex sets (and colours) on its topology."""
    mesh = random_grid_mesh(rng, int(rng.integers(3, 6)), int(rng.integers(3, 7)))
    V = mesh.num_vertices
    vertices = torch.from_numpy(rng.normal(size=(n, V, 3))).float()  # (N, V, 3)
    col = torch.from_numpy(rng.random((n, V, colors))).float() if colors else None  # (N, V, C)
    return mesh, vertices, col


def test_to_pyg_one_mesh_is_a_data_with_transposed_faces(rng):
    mesh, vertices, colors = _batch(rng, 1, colors=3)
    data = to_pyg(vertices[0], mesh.faces, colors[0])
    assert type(data) is Data
    assert data.pos.data_ptr() == vertices.data_ptr() and torch.equal(data.pos, vertices[0])  # no copy
    assert data.face.dtype == torch.long and data.face.shape == (3, mesh.num_faces)
    np.testing.assert_array_equal(data.face.numpy(), mesh.faces.T)
    assert torch.equal(data.color, colors[0])
    assert data.num_nodes == mesh.num_vertices


def test_to_pyg_batch_offsets_faces_per_graph_and_reads_back(rng):
    n = int(rng.integers(2, 6))
    mesh, vertices, colors = _batch(rng, n, colors=int(rng.integers(1, 5)))
    V, F = mesh.num_vertices, mesh.num_faces
    batch = to_pyg(vertices, torch.from_numpy(mesh.faces), colors)
    assert isinstance(batch, Batch) and batch.num_graphs == n
    assert torch.equal(batch.pos, vertices.reshape(n * V, 3))
    assert torch.equal(batch.batch, torch.arange(n).repeat_interleave(V))
    for i in range(n):  # graph i's faces are the template's, offset by its first vertex
        np.testing.assert_array_equal(batch.face[:, i * F:(i + 1) * F].numpy(), mesh.faces.T + i * V)
    back = from_pyg(batch)
    assert isinstance(back, PyGMeshes)
    assert torch.equal(back.vertices, vertices)
    np.testing.assert_array_equal(back.faces.numpy(), mesh.faces)
    assert torch.equal(back.colors, colors)


def test_gradients_flow_from_pyg_positions_to_the_vertices(rng):
    mesh, vertices, colors = _batch(rng, 3, colors=3)
    vertices.requires_grad_(True)
    colors.requires_grad_(True)
    batch = to_pyg(vertices, mesh.faces, colors)
    w_pos, w_col = torch.randn_like(batch.pos), torch.randn_like(batch.color)
    ((batch.pos * w_pos).sum() + (batch.color * w_col).sum()).backward()
    assert torch.equal(vertices.grad, w_pos.view_as(vertices))
    assert torch.equal(colors.grad, w_col.view_as(colors))


def test_a_pyg_dataloader_batch_reads_as_stacked_vertices(rng):
    mesh, vertices, _ = _batch(rng, 5)
    graphs = [to_pyg(v, mesh.faces) for v in vertices]
    seen = []
    for batch in DataLoader(graphs, batch_size=3, shuffle=False):
        out = from_pyg(batch)
        np.testing.assert_array_equal(out.faces.numpy(), mesh.faces)
        seen.append(out.vertices)
    assert [t.shape[0] for t in seen] == [3, 2]
    assert torch.equal(torch.cat(seen), vertices)


@pytest.mark.parametrize("suffix, reader", [(".off", read_off), (".ply", read_ply)])
def test_mesh_files_read_by_pyg_give_the_mesh(tmp_path, rng, suffix, reader):
    """PyG's own readers set the layout this module assumes: pos (V, 3), face (3, F), same winding."""
    mesh = random_grid_mesh(rng, 4, 5)
    path = tmp_path / f"m{suffix}"
    save_mesh(mesh, path)
    back = mesh_from_pyg(reader(str(path)))
    np.testing.assert_allclose(back.vertices, mesh.vertices, rtol=1e-6, atol=1e-4)  # PyG reads float32
    np.testing.assert_array_equal(back.faces, mesh.faces)


def test_face_to_edge_gives_the_mesh_edges(rng):
    mesh = random_grid_mesh(rng, 4, 6)
    data = FaceToEdge()(mesh_to_pyg(mesh))
    pyg_edges = {tuple(e) for e in data.edge_index.t().tolist()}
    ours = {tuple(e) for e in mesh.edges().tolist()}
    assert pyg_edges == ours | {(j, i) for i, j in ours}


def test_mesh_round_trip_keeps_vertices_faces_and_colours(rng):
    mesh = random_grid_mesh(rng, 3, 4, colors=True)
    data = mesh_to_pyg(mesh, dtype=torch.float64)
    assert data.pos.dtype == torch.float64 and data.color.dtype == torch.float64
    back = mesh_from_pyg(data)
    np.testing.assert_array_equal(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_array_equal(back.colors, mesh.colors)
    assert mesh_to_pyg(mesh).pos.dtype == torch.float32


def test_a_batch_of_one_graph_reads_as_one_mesh(rng):
    mesh, vertices, _ = _batch(rng, 1)
    batch = Batch.from_data_list([to_pyg(vertices[0], mesh.faces)])
    out = from_pyg(batch)
    assert torch.equal(out.vertices, vertices)
    np.testing.assert_array_equal(mesh_from_pyg(batch).faces, mesh.faces)


def _two_graphs(rng):
    mesh, vertices, _ = _batch(rng, 2)
    return mesh, vertices, [to_pyg(v, mesh.faces) for v in vertices]


def test_batches_of_different_meshes_are_refused_naming_the_graph(rng):
    mesh, vertices, graphs = _two_graphs(rng)
    faces = mesh.faces.copy()
    faces[0] = faces[0, [0, 2, 1]]  # same count, other winding
    other = [graphs[0], to_pyg(vertices[1], faces)]
    with pytest.raises(ValueError, match="graph 1's faces differ from graph 0's"):
        from_pyg(Batch.from_data_list(other))
    fewer = [graphs[0], to_pyg(vertices[1], mesh.faces[1:])]
    with pytest.raises(ValueError, match=f"graph 1 has {mesh.num_faces - 1} faces and graph 0 has {mesh.num_faces}"):
        from_pyg(Batch.from_data_list(fewer))
    V = mesh.num_vertices
    bigger = [graphs[0], to_pyg(torch.randn(V + 1, 3), mesh.faces)]
    with pytest.raises(ValueError, match=f"graph 1 has {V + 1} vertices and graph 0 has {V}"):
        from_pyg(Batch.from_data_list(bigger))
    with pytest.raises(ValueError, match="expected one mesh graph, got a batch of 2"):
        mesh_from_pyg(Batch.from_data_list(graphs))


@pytest.mark.parametrize("change, error, message", [
    (lambda v, f, c: (v.numpy(), f, c), TypeError, "vertices: expected a torch.Tensor, got ndarray"),
    (lambda v, f, c: (v[..., :2], f, c), ValueError, r"vertices: expected shape \(V, 3\) or \(N, V, 3\)"),
    (lambda v, f, c: (v.long(), f, c), TypeError, "vertices: expected a floating dtype, got torch.int64"),
    (lambda v, f, c: (v[:0], f, None), ValueError, r"vertices: expected at least one mesh, got an empty batch \(0, "),
    (lambda v, f, c: (v, f[:, :2], c), ValueError, r"faces: expected shape \(F, 3\), got"),
    (lambda v, f, c: (v, f.T, c), ValueError, r"faces: expected shape \(F, 3\), got \(3, "),
    (lambda v, f, c: (v, f + v.shape[1], c), ValueError, r"faces: expected indices in \[0, "),
    (lambda v, f, c: (v, f - f.max() - 1, c), ValueError, r"faces: expected indices in \[0, "),
    (lambda v, f, c: (v, f.astype(np.float64), c), TypeError, "faces: expected integer indices, got torch.float64"),
    (lambda v, f, c: (v, torch.from_numpy(f).float(), c), TypeError,
     "faces: expected integer indices, got torch.float32"),
    (lambda v, f, c: (v, f, c[:, 1:]), ValueError, r"colors: expected shape \(2, \d+, C\) to match the vertices"),
    (lambda v, f, c: (v, f, c[0]), ValueError, r"colors: expected shape \(2, \d+, C\)"),
    (lambda v, f, c: (v, f, c.numpy()), TypeError, "colors: expected a torch.Tensor, got ndarray"),
])
def test_to_pyg_names_bad_input(rng, change, error, message):
    mesh, vertices, colors = _batch(rng, 2, colors=3)
    with pytest.raises(error, match=message):
        to_pyg(*change(vertices, mesh.faces, colors))


@pytest.mark.parametrize("change, error, message", [
    (lambda d: d.pos, TypeError, "data: expected a torch_geometric.data.Data or Batch, got Tensor"),
    (lambda d: Data(pos=d.pos), ValueError, r"data.face: expected a tensor, got none"),
    (lambda d: Data(face=d.face, num_nodes=d.num_nodes), ValueError, r"data.pos: expected a tensor, got none"),
    (lambda d: Data(pos=d.pos[:, :2], face=d.face), ValueError, r"data.pos: expected shape \(V, 3\), got"),
    (lambda d: Data(pos=d.pos.long(), face=d.face), TypeError, "data.pos: expected a floating dtype"),
    (lambda d: Data(pos=d.pos, face=d.face[:2]), ValueError, r"data.face: expected shape \(3, F\), got \(2, "),
    (lambda d: Data(pos=d.pos, face=d.face.float()), TypeError, "data.face: expected integer indices"),
    (lambda d: Data(pos=d.pos[:-1], face=d.face), ValueError, r"data.face: expected indices in \[0, "),
    (lambda d: Data(pos=d.pos, face=d.face, color=d.color[1:]), ValueError,
     r"data.color: expected shape \(\d+, C\), one row per vertex"),
])
def test_from_pyg_names_bad_input(rng, change, error, message):
    mesh, vertices, colors = _batch(rng, 1, colors=3)
    data = to_pyg(vertices[0], mesh.faces, colors[0])
    with pytest.raises(error, match=message):
        from_pyg(change(data))


def test_mesh_conversions_name_bad_input(rng):
    mesh, vertices, colors = _batch(rng, 1, colors=4)
    with pytest.raises(TypeError, match="mesh: expected a mesh_decoder.mesh.Mesh, got Data"):
        mesh_to_pyg(to_pyg(vertices[0], mesh.faces))
    with pytest.raises(TypeError, match="dtype: expected a floating torch.dtype, got torch.int32"):
        mesh_to_pyg(mesh, dtype=torch.int32)
    with pytest.raises(ValueError, match="data.color: expected 3 channels"):
        mesh_from_pyg(to_pyg(vertices[0], mesh.faces, colors[0]))


def test_a_batch_whose_faces_reach_into_the_next_graph_is_refused(rng):
    mesh, vertices, graphs = _two_graphs(rng)
    batch = Batch.from_data_list(graphs)
    V = mesh.num_vertices
    batch.face[1, 0] = V  # graph 0's first face now uses graph 1's first vertex as its second corner
    with pytest.raises(ValueError, match=r"data.face of graph 0 \(within the graph\): expected indices in \[0, "):
        from_pyg(batch)
