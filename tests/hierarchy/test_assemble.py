"""hierarchy_from_matrices: COMA-style down/up-sampling matrices in, a checked MeshHierarchy out."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mesh_decoder.errors import HierarchyError, MeshValidationError
from mesh_decoder.hierarchy import build_hierarchy, hierarchy_from_matrices, load_hierarchy, save_hierarchy
from mesh_decoder.mesh.templates import face_template
from mesh_decoder.nn import ChebDecoder, SpiralDecoder


@pytest.fixture(scope="module")
def template():
    return face_template(600, seed=4)


@pytest.fixture(scope="module")
def built(template):
    return build_hierarchy(template, factors=(2, 2), spiral_lengths=(9, 7, 5), texture_size=32)


def coma_matrices(h, *, kept_rows_single: bool = False):
    """COMA's layout of ``h``: ``D[l]`` ``(V_{l+1}, V_l)`` selections and ``U[l]`` ``(V_l, V_{l+1})``
    barycentric rows (csc, as COMA pickles them), and the coarse levels' faces."""
    D, U = [], []
    for l in range(h.num_levels - 1):
        fine, coarse = h.sizes[l], h.sizes[l + 1]
        kept = h.down[l].numpy()
        D.append(sp.csc_matrix((np.ones(coarse), (np.arange(coarse), kept)), shape=(coarse, fine)))
        index, weight = h.up_index[l].numpy().copy(), h.up_weight[l].double().numpy().copy()
        if kept_rows_single:  # a kept vertex as one entry, not (j, j, j) with weights (1, 0, 0)
            weight[kept] = 0.0
            weight[kept, 0] = 1.0
        U.append(sp.csc_matrix((weight.ravel(), (np.repeat(np.arange(fine), 3), index.ravel())), shape=(fine, coarse)))
    return D, U, [h.levels[l].faces.numpy() for l in range(1, h.num_levels)]


def dense_up(h, l: int) -> torch.Tensor:
    """``(V_l, V_{l+1})`` float64 up-sampling matrix of ``h``."""
    m = torch.zeros(h.sizes[l], h.sizes[l + 1], dtype=torch.float64)
    return m.scatter_add_(1, h.up_index[l], h.up_weight[l].double())


def test_the_matrices_of_a_built_hierarchy_give_it_back(template, built):
    D, U, F = coma_matrices(built, kept_rows_single=True)
    h = hierarchy_from_matrices(template, D, U, F, spiral_lengths=(9, 7, 5), texture_size=32)
    assert h.sizes == built.sizes == [600, 300, 150]
    for a, b in zip(h.levels, built.levels):
        for name in ("vertices", "faces", "spirals", "laplacian_index", "laplacian_weight", "original_index"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert (a.spiral_length, a.dilation) == (b.spiral_length, b.dilation)
    for l in range(2):
        assert torch.equal(h.down[l], built.down[l])
        assert torch.equal(dense_up(h, l), dense_up(built, l))
    for name in ("index", "weight", "face", "mask"):
        assert torch.equal(getattr(h.texel_map, name), getattr(built.texel_map, name))
    assert h.meta["source"] == "matrices" and "factors" not in h.meta
    assert h.template_hash == built.template_hash and h.meta["uv_hash"] == built.meta["uv_hash"]
    # the decoders run on it as on the built one (the kept rows' entries in another order round differently)
    z = torch.randn(3, 8)
    for cls, kwargs in ((SpiralDecoder, {}), (ChebDecoder, {"K": 3})):
        torch.manual_seed(11)
        ours = cls.from_hierarchy(h, latent_size=8, channels=(8, 16), **kwargs).eval()
        torch.manual_seed(11)
        theirs = cls.from_hierarchy(built, latent_size=8, channels=(8, 16), **kwargs).eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(z), theirs(z), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["torch-sparse", "torch-dense", "numpy", "csr", "coo-array"])
def test_matrix_kinds(template, built, kind):
    D, U, F = coma_matrices(built)
    convert = {
        "torch-sparse": lambda m: torch.from_numpy(m.toarray()).to_sparse(),
        "torch-dense": lambda m: torch.from_numpy(m.toarray()).float(),
        "numpy": lambda m: m.toarray(),
        "csr": sp.csr_matrix,
        "coo-array": sp.coo_array,
    }[kind]
    faces = [torch.from_numpy(f) for f in F] if kind.startswith("torch") else F
    h = hierarchy_from_matrices(template, [convert(m) for m in D], [convert(m) for m in U], faces,
                                spiral_lengths=(9, 7, 5))
    assert h.sizes == built.sizes and h.texel_map is None
    for l in range(2):
        assert torch.equal(h.down[l], built.down[l])
        torch.testing.assert_close(dense_up(h, l), dense_up(built, l), rtol=0, atol=1e-7)


def test_saved_and_loaded(template, built, tmp_path):
    D, U, F = coma_matrices(built)
    h = hierarchy_from_matrices(template, D, U, F)
    back = load_hierarchy(save_hierarchy(h, tmp_path / "coma.npz"), expected_template_hash=template.content_hash())
    assert back.meta == h.meta and back.sizes == h.sizes
    assert torch.equal(back.levels[2].spirals, h.levels[2].spirals)


def _edit(matrix, row: int, cols: list[int], values: list[float]):
    m = sp.lil_matrix(matrix)
    m[row, :] = 0
    for c, v in zip(cols, values):
        m[row, c] = v
    return sp.csc_matrix(m)


def test_bad_matrices_are_named(template, built):
    D, U, F = coma_matrices(built)
    kept0 = built.down[0].numpy()
    moving = int(np.setdiff1d(np.arange(600), kept0)[0])  # a vertex the first level drops

    def refused(match, down=D, up=U, faces=F, error=HierarchyError):
        with pytest.raises(error, match=match):
            hierarchy_from_matrices(template, down, up, faces)

    refused(r"down\[0\]: expected a selection matrix .*got 2 entries in row 5",
            down=[_edit(D[0], 5, [1, 2], [0.5, 0.5]), D[1]])
    refused(r"down\[1\]: expected a selection matrix .*got 0\.5 in row 3", down=[D[0], _edit(D[1], 3, [0], [0.5])])
    refused(r"down\[0\]: expected each fine vertex kept at most once, got 1 kept twice",
            down=[_edit(D[0], 1, [int(kept0[0])], [1.0]), D[1]])
    refused(r"down\[0\]: expected a \(V_coarse, 600\) matrix with 1 <= V_coarse < 600 \(level 0 has 600 vertices\), "
            r"got shape \(300, 599\)$", down=[D[0][:, :599], D[1]])
    refused(r"down\[0\]: expected a \(V_coarse, 600\) matrix .*got shape \(600, 300\) \(transposed\? a down-sampling "
            r"matrix is \(V_coarse, V_fine\), COMA's D\)", down=[D[0].T, D[1]])
    refused(r"up\[1\]: expected shape \(300, 150\), got \(150, 300\)", up=[U[0], U[1].T])
    refused(r"up\[0\]: expected 1 to 3 entries per row .*got 4 in row 7",
            up=[_edit(U[0], 7, [0, 1, 2, 3], [0.25] * 4), U[1]])
    refused(r"up\[0\]: expected 1 to 3 entries per row .*got 0 in row 7", up=[_edit(U[0], 7, [], []), U[1]])
    refused(r"up\[0\]: expected non-negative weights, got -0\.5 in row 9",
            up=[_edit(U[0], 9, [0, 1, 2], [1.0, 0.5, -0.5]), U[1]])
    refused(r"up\[0\]: expected each row's weights to sum to 1, got 0\.9 in row 9",
            up=[_edit(U[0], 9, [0, 1], [0.5, 0.4]), U[1]])
    refused(rf"up\[0\]: expected each vertex down\[0\] keeps to up-sample from its own coarse copy .*row "
            rf"{int(kept0[0])} with weight 0\.5 on coarse vertex 0",
            up=[_edit(U[0], int(kept0[0]), [0, 1], [0.5, 0.5]), U[1]])
    assert moving not in kept0
    refused(r"faces\[1\]: expected indices in \[0, 150\) .*got \[0, 150\]",
            faces=[F[0], np.vstack([F[1], [[0, 1, 150]]])])
    refused(r"faces\[0\]: expected an \(F, 3\) array of triangles, got shape \(10, 4\)",
            faces=[np.zeros((10, 4), dtype=np.int64), F[1]])
    # a wrong type is a TypeError, as compute_spirals and upsample_operator say it (was a HierarchyError)
    refused(r"^faces\[1\]: expected integer vertex indices \(or floats holding whole numbers\), got dtype float64 "
            r"with fractions$", faces=[F[0], F[1] + 0.4], error=TypeError)
    refused(r"^faces\[0\]: expected integer vertex indices \(or floats holding whole numbers\), got dtype bool$",
            faces=[F[0] > 0, F[1]], error=TypeError)
    flipped = F[1].copy()
    flipped[0] = flipped[0, ::-1]
    refused(r"level 2 \(faces\[1\] on the vertices down\[1\] keeps\): ", faces=[F[0], flipped],
            error=MeshValidationError)
    refused(r"expected as many up-sampling matrices and face arrays as down-sampling matrices \(2\), got 1 up",
            up=U[:1])
    refused(r"down: expected at least one down-sampling matrix", down=[], up=[], faces=[])
    with pytest.raises(TypeError, match=r"down\[0\]: expected a scipy sparse matrix, a torch tensor or a numpy "
                                        r"array, got list"):
        hierarchy_from_matrices(template, [D[0].toarray().tolist(), D[1]], U, F)
    with pytest.raises(TypeError, match=r"template: expected a mesh_decoder Mesh, got ndarray"):
        hierarchy_from_matrices(template.vertices, D, U, F)


def test_coma_least_squares_rows_are_rescaled_with_a_warning(template, built):
    """COMA's rows for a fine vertex nearest a coarse edge are least-squares fits summing to 0.99-1.01: they were
    refused, with no way round it."""
    D, U, F = coma_matrices(built)
    rng = np.random.default_rng()
    fine = built.sizes[0]
    moving = np.setdiff1d(np.arange(fine), built.down[0].numpy())
    rows = rng.choice(moving, size=20, replace=False)
    scale = np.ones(fine)
    # off 1 by 1e-4 to 1e-2, half above and half below: a row within 1e-5 of 1 is left as it is, not rescaled
    scale[rows] = 1 + np.resize([-1.0, 1.0], rows.size) * rng.uniform(1e-4, 0.01, size=rows.size)
    scaled = sp.csc_matrix(sp.diags(scale) @ U[0])
    with pytest.warns(RuntimeWarning, match=r"rescaled up-sampling rows to sum to 1: up\[0\]: 20 of 600 rows, sums "
                                            r"0\.99\d* to 1\.0\d*"):
        h = hierarchy_from_matrices(template, D, [scaled, U[1]], F)
    torch.testing.assert_close(dense_up(h, 0), dense_up(built, 0), rtol=0, atol=1e-6)
    with pytest.raises(HierarchyError, match=r"up\[0\]: expected each row's weights to sum to 1, got .* "
                                             r"\(renormalize=True rescales rows within 5 % of 1\)"):
        hierarchy_from_matrices(template, D, [scaled, U[1]], F, renormalize=False)


def test_matrices_for_another_vertex_order_are_refused(template, built):
    """Matrices made for the template's vertices in another order (a mesh re-exported by another tool) were
    accepted and trained in silence."""
    D, U, F = coma_matrices(built)
    order = np.random.default_rng().permutation(600)
    shuffled = template.copy(vertices=template.vertices[order], faces=np.argsort(order)[template.faces], uv=None,
                             uv_faces=None, landmarks={})
    with pytest.raises(HierarchyError, match=r"up\[0\]: expected the up-sampled level 1 to land near level 0's "
                                             r"vertices, got them .* away on average, .* times level 0's mean edge "
                                             r"length .*: matrices made for another template or vertex order\?"):
        hierarchy_from_matrices(shuffled, D, U, F)


def test_rows_off_the_coarse_faces_are_refused(template, built):
    D, U, F = coma_matrices(built)
    faces = {tuple(sorted(f)) for f in F[0].tolist()}
    rng = np.random.default_rng()
    moving = int(rng.choice(np.setdiff1d(np.arange(600), built.down[0].numpy())))
    while True:
        triple = sorted(rng.choice(300, size=3, replace=False).tolist())
        if tuple(triple) not in faces:
            break
    off = _edit(U[0], moving, triple, [0.2, 0.3, 0.5])
    with pytest.raises(HierarchyError, match=rf"up\[0\]: expected each row's columns to be a face, an edge or a "
                                             rf"vertex of level 1 \(faces\[0\]\), got row {moving} with columns "
                                             rf"\[{triple[0]}, {triple[1]}, {triple[2]}\]"):
        hierarchy_from_matrices(template, D, [off, U[1]], F)


def test_migrants_layouts_and_slips(template, built, tmp_path):
    """np.load of a saved scipy matrix gives a 0-d object array; an .npz list a 1-D one. Slips get hints."""
    D, U, F = coma_matrices(built)
    for i, m in enumerate(D + U):
        np.save(tmp_path / f"m{i}.npy", np.array(m, dtype=object), allow_pickle=True)  # as COMA users save them
    loaded = [np.load(tmp_path / f"m{i}.npy", allow_pickle=True) for i in range(4)]
    assert loaded[0].shape == () and loaded[0].dtype == object
    as_array = np.empty(2, dtype=object)
    as_array[:] = loaded[2:]
    h = hierarchy_from_matrices(template, loaded[:2], as_array, F)
    assert h.sizes == built.sizes
    with pytest.raises(HierarchyError, match=r"faces\[0\]: expected indices in \[0, 300\) .*got \[1, 300\] \(1-based\? "
                                             r"subtract 1\)"):
        hierarchy_from_matrices(template, D, U, [F[0] + 1, F[1]])
    with pytest.raises(HierarchyError, match=r"got 2 up and 3 faces \(faces holds the levels below the template only"):
        hierarchy_from_matrices(template, D, U, [template.faces, *F])
    with pytest.raises(MeshValidationError, match=r"faces\[0\] must be level 1's faces, COMA's M\[1\]\.f"):
        hierarchy_from_matrices(template, D, U, [F[1], F[1]])
    kept0 = built.down[0].numpy()
    moved = sp.csr_matrix(U[0])[:, np.roll(np.arange(300), 1)]  # columns in another order than D's rows
    with pytest.raises(HierarchyError, match=r"its entries: columns \[\d+\], weights \[1\.0\]\); all 300 kept rows "
                                             r"miss: down\[0\]'s row order and up\[0\]'s column order differ\?"):
        hierarchy_from_matrices(template, D, [moved, U[1]], F)
    assert kept0.size == 300


def test_the_callers_matrices_are_left_as_they_were_and_odd_kinds_refused(template, built):
    """The clean-up of duplicates and stored zeros ran in place on a float64 CSR the caller passed, leaving it
    inconsistent (indptr against data); complex and meta inputs were taken or failed deep in numpy or torch."""
    D, U, F = coma_matrices(built)
    u = sp.csr_matrix(U[0])
    rows, cols = np.repeat(np.arange(600), np.diff(u.indptr)), u.indices
    extra_rows = np.arange(0, 600, 7)
    extra_cols = (u.indices[u.indptr[extra_rows]] + 1) % 300
    mine = sp.csr_matrix((np.concatenate([u.data, np.zeros(extra_rows.size)]),  # stored zeros beside the weights
                          (np.concatenate([rows, extra_rows]), np.concatenate([cols, extra_cols]))), shape=u.shape)
    assert mine.nnz > u.nnz
    with_zeros = sp.csr_matrix((mine.data.copy(), mine.indices.copy(), mine.indptr.copy()), shape=u.shape)
    before = (with_zeros.indptr.copy(), with_zeros.indices.copy(), with_zeros.data.copy())
    hierarchy_from_matrices(template, D, [with_zeros, U[1]], F)
    after = (with_zeros.indptr, with_zeros.indices, with_zeros.data)
    assert all(np.array_equal(a, b) for a, b in zip(before, after)) and with_zeros.nnz == mine.nnz
    for bad, match in ((D[0].astype(np.complex128), r"down\[0\]: expected real entries, got complex"),
                       (D[0].toarray().astype(np.complex64), r"down\[0\]: expected real entries, got complex"),
                       (torch.empty(300, 600, device="meta"), r"down\[0\]: expected a real tensor with values, got "
                                                           r"a meta tensor")):
        with pytest.raises(TypeError, match=match):
            hierarchy_from_matrices(template, [bad, D[1]], U, F)


def test_per_level_counts_are_stated_in_its_own_terms(template, built):
    """spiral_lengths of the wrong count said 'len(factors) + 1', an argument hierarchy_from_matrices has not."""
    D, U, F = coma_matrices(built)
    with pytest.raises(ValueError, match=r"spiral_lengths: expected 3 values \(one per level, len\(down\) \+ 1\), "
                                         r"got 2"):
        hierarchy_from_matrices(template, D, U, F, spiral_lengths=[9, 9])
