"""The ``mesh-decoder`` command: one-line errors, non-zero exits, no tracebacks."""

import argparse
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from mesh_decoder import __version__
from mesh_decoder.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["template", "--vertices", "many", "-o", "x.obj"],
        ["template", "--kind", "cube", "-o", "x.obj"],
    ],
)
def test_argument_errors_are_one_line(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mesh_decoder.cli", "hierarchy", str(tmp_path / "missing.obj")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "missing.obj" in proc.stderr
    assert proc.stderr.count("\n") == 1


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / f"file{np.random.default_rng().integers(1000)}"
    a_file.write_text("keep me")
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    cases = [
        (["template", "--vertices", "600", "-o", str(a_file / "x.obj")], f"{a_file} is a file"),
        (["template", "--vertices", "600", "-o", str(a_dir)], "found a directory"),
        (["hierarchy", "-o", str(a_file / "h.npz")], f"{a_file} is a file"),
        (["render", str(tmp_path / "no-run"), "-o", str(a_dir)], "found a directory"),
        (["train", str(tmp_path / "no-config.yaml"), "-o", str(a_file)],
         "expected a directory, found an existing file"),
        (["bench", "--decoders", "pca", "--batch-sizes", "1", "--modes", "eager", "--vertices", "600",
          "--output-dir", str(a_file / "sub")], f"{a_file} is a file"),
        (["evaluate", str(tmp_path / "no-run"), "--json", str(a_file / "x.json")], f"{a_file} is a file"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1, argv
        err = _one_error_line(capsys)
        assert expected in err, (argv, err)
    assert a_file.read_text() == "keep me" and list(a_dir.iterdir()) == []


def test_os_errors_are_one_line_naming_the_users_file(tmp_path, capsys, monkeypatch):
    import mesh_decoder.cli as cli

    monkeypatch.setattr(cli, "check_output_path", lambda path, name, **kw: path)  # reach the write itself
    a_file = tmp_path / "afile"
    a_file.write_text("")
    assert main(["template", "--vertices", "600", "-o", str(a_file / "x.obj")]) == 1
    err = _one_error_line(capsys)
    assert err == f"error: {a_file / 'x.obj'}: expected a file path, but {a_file} is a file, not a directory\n", err
    target = tmp_path / f"out{np.random.default_rng().integers(1000)}.obj"
    target.mkdir()
    assert main(["template", "--vertices", "600", "-o", str(target)]) == 1
    err = _one_error_line(capsys)
    assert err == f"error: {target}: expected a file path, found a directory\n", err  # no temporary file named
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_one_line_prefers_the_rename_destination():
    from mesh_decoder._checks import one_line_error as _one_line

    exc = IsADirectoryError(21, "Is a directory", "/d/.out.png.x1y2.tmp", None, "/d/out.png")
    assert _one_line(exc) == "/d/out.png: Is a directory"
    assert _one_line(OSError(28, "No space left on device")) == "[Errno 28] No space left on device"


def test_hierarchy_takes_real_factors(tmp_path, capsys):
    """--factors takes what build_hierarchy takes: real numbers > 1 (a whole number stays an int in meta)."""
    from mesh_decoder.hierarchy.storage import load_hierarchy

    template = tmp_path / "t.obj"
    assert main(["template", "--vertices", "600", "-o", str(template)]) == 0
    out = tmp_path / "h.npz"
    assert main(["hierarchy", str(template), "--factors", "2.5", "4", "--texture-size", "0", "-o", str(out)]) == 0
    h = load_hierarchy(out)
    assert h.meta["factors"] == [2.5, 4] and h.sizes == [600, 240, 60]
    capsys.readouterr()
    for bad in ("1", "nan", "0", "inf", "four"):  # named as the option (was build_hierarchy's 'factors[0]')
        assert main(["hierarchy", str(template), "--factors", "4", bad, "--texture-size", "0"]) == 2
        err = _one_error_line(capsys)
        assert f"argument --factors: expected a finite real number > 1, got '{bad}'" in err, err


def test_render_of_a_checkpoint_samples_the_training_latents_prior(tiny_run, tmp_path, capsys, monkeypatch):
    """A checkpoint stores no latent prior: render fits it to the training latents (as evaluate does), so the
    checkpoint of a finished run renders the faces its model file renders, not samples of N(0, I)."""
    import mesh_decoder.render as render

    grids = []
    monkeypatch.setattr(render, "face_grid", lambda vertices, *args, **kwargs: grids.append(vertices.clone()))
    for name in ("model.safetensors", "checkpoint.safetensors"):
        assert main(["render", str(tiny_run / name), "--n", "3", "--seed", "5", "-o", str(tmp_path / "g.png")]) == 0
    out = capsys.readouterr().out
    assert "sampled from the stored latent prior" in out and "fitted now: a checkpoint stores none" in out, out
    assert grids[0].shape == (3, 500, 3) and torch.allclose(grids[1], grids[0], atol=1e-4)


def test_a_damaged_saved_hierarchy_without_openmesh_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    """load_trained rebuilds a damaged hierarchy.npz from the config; without openmesh the command says so in
    one line naming the damaged file, with no ImportError traceback."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "hierarchy.npz").write_bytes(np.random.default_rng(3).integers(0, 256, 64, dtype=np.uint8).tobytes())
    monkeypatch.setitem(sys.modules, "openmesh", None)
    assert main(["render", str(run), "--n", "2", "-o", str(tmp_path / "g.png")]) == 1
    err = _one_error_line(capsys)
    assert f"{run / 'hierarchy.npz'}: not a .npz archive" in err and "needs openmesh" in err, err
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("kind, vertices, allowed", [("face", 499, "[500, 100000]"), ("head", 100_001, "[500, 100000]"),
                                                     ("sphere", 0, "[1, 163842]")])
def test_template_vertex_count_errors_name_the_option(kind, vertices, allowed, capsys):
    assert main(["template", "--kind", kind, "--vertices", str(vertices), "--info"]) == 2
    err = _one_error_line(capsys)
    assert f"--vertices: expected an integer in {allowed} for --kind {kind}, got {vertices}" in err, err


def test_template_info_summarises_a_mesh_file(tmp_path, capsys):
    """`template --info` only summarised the built-in templates: a user's own file was 'unrecognized arguments'."""
    from mesh_decoder.mesh import face_template, save_mesh, template_info

    face = face_template(int(torch.randint(500, 900, ())))
    uv = face.uv.copy()
    uv[:, 1] *= 0.5  # a layout of the user's own: another coverage than the built-in one
    path = tmp_path / "mine.obj"
    save_mesh(face.copy(uv=uv), path)
    capsys.readouterr()
    assert main(["template", "--info", str(path)]) == 0
    printed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    info = template_info(face.copy(uv=uv))
    assert printed["num_vertices"].strip() == str(face.num_vertices)
    assert printed["uv_coverage"].strip() == f"{info['uv_coverage']:.4g}" != f"{template_info(face)['uv_coverage']:.4g}"
    for extra, named in ((["--vertices", "600"], "--vertices"), (["-o", str(tmp_path / "x.obj")], "-o/--output"),
                         ([], "no --info")):
        args = ["template", str(path), *extra] + (["--info"] if extra else [])
        assert main(args) == 2
        assert _one_error_line(capsys).strip() == (f"error: mesh-decoder template {path}: a mesh file is only "
                                                   f"summarised: expected --info alone, got {named}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.obj"]


def test_hierarchy_prints_its_texel_map_and_whether_the_uvs_are_automatic(tmp_path, capsys):
    """The command printed nothing of the texel map, nor that a template without UVs got automatic ones."""
    from mesh_decoder.mesh import face_template, save_mesh

    face = face_template(500)
    save_mesh(face, tmp_path / "uv.obj")
    save_mesh(face.copy(uv=None, uv_faces=None), tmp_path / "bare.obj")
    for name, note in (("uv.obj", ""), ("bare.obj", " (the template has no UVs: automatic ones, "
                                                    "mesh_decoder.mesh.uv.ensure_uv)")):
        capsys.readouterr()
        assert main(["hierarchy", str(tmp_path / name), "--factors", "4", "4", "--texture-size", "16"]) == 0
        last = capsys.readouterr().out.splitlines()[-1]
        assert re.fullmatch(r"texel map: 16 x 16, \d+\.\d% of the texels inside a UV triangle" + re.escape(note),
                            last), last
    assert main(["hierarchy", str(tmp_path / "uv.obj"), "--factors", "4", "4", "--texture-size", "0"]) == 0
    assert "texel map" not in capsys.readouterr().out


def test_train_and_fit_draw_no_progress_bar_into_a_log(tmp_path, capsys, monkeypatch):
    """train and fit drew tqdm bars into a piped stderr (each update kept as a line of the log); bench only drew
    one on a terminal. On a terminal they still do."""
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"template": {"vertices": 500}, "hierarchy": {"factors": [4, 4]},
                                      "data": {"n": 12}, "model": {"channels": [8, 8], "latent_size": 4},
                                      "training": {"epochs": 1, "batch_size": 4}}))
    from mesh_decoder.mesh import face_template, save_mesh

    save_mesh(face_template(500), tmp_path / "target.obj")
    for tty in (False, True):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty, raising=False)
        run = tmp_path / f"run{tty}"
        assert main(["train", str(config), "-o", str(run)]) == 0
        train_err = capsys.readouterr().err
        assert main(["fit", str(run), "--target", str(tmp_path / "target.obj"), "--stages", "shape:3", "-o",
                     str(tmp_path / f"fitted{tty}.obj")]) == 0
        fit_err = capsys.readouterr().err
        assert ("%|" in train_err) == tty and ("%|" in fit_err) == tty, (tty, train_err, fit_err)


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import mesh_decoder.hierarchy as hierarchy

    def build(*args, **kwargs):
        raise MemoryError("Unable to allocate 123. MiB for an array with shape (16129168,) and data type float64")

    monkeypatch.setattr(hierarchy, "build_hierarchy", build)
    assert main(["hierarchy", "--texture-size", "8192", "-o", str(tmp_path / "h.npz")]) == 1
    err = _one_error_line(capsys)
    assert err.startswith("error: out of memory (Unable to allocate 123. MiB") and "smaller sizes" in err, err


def test_render_writes_only_png_names(tiny_run, tmp_path, capsys):
    """-o grid.jpg (or .obj) wrote PNG bytes under that name; it is refused before the model is loaded."""
    for name in ("grid.jpg", "grid.obj", "grid"):
        assert main(["render", str(tmp_path / "no-run"), "--n", "2", "-o", str(tmp_path / name)]) == 2
        err = _one_error_line(capsys)
        assert f"-o/--output {tmp_path / name}: expected a file name ending in .png" in err, err
    assert list(tmp_path.iterdir()) == []


def test_hierarchy_writes_only_npz_names(tmp_path, capsys):
    """-o h.obj wrote an .npz archive under that name; it is refused before the build."""
    for name in ("h.obj", "h"):
        assert main(["hierarchy", "--factors", "4", "--texture-size", "0", "-o", str(tmp_path / name)]) == 2
        err = _one_error_line(capsys)
        assert f"-o/--output {tmp_path / name}: expected a file name ending in .npz" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, found", [("t.xyz", "got '.xyz'"), ("t", "got no extension")])
def test_template_with_another_extension_names_what_it_writes(name, found, tmp_path, capsys):
    """-o t.xyz was refused after the build as 'expected extension one of .obj, .off, .ply' (OFF is refused too),
    with exit status 1 where the other argument errors give 2."""
    assert main(["template", "-o", str(tmp_path / name)]) == 2
    err = _one_error_line(capsys)
    assert err == f"error: mesh-decoder template: -o/--output {tmp_path / name}: expected .obj or .ply, {found}\n"
    assert list(tmp_path.iterdir()) == []


def test_template_as_off_names_the_option(tmp_path, capsys):
    """Every template has UVs, which OFF cannot store: -o x.off failed after the build with a hint at the Python
    API (mesh.copy(uv=None, ...)); it is refused up front naming -o/--output."""
    seed = int(np.random.default_rng().integers(100))
    assert main(["template", "--vertices", "600", "--seed", str(seed), "-o", str(tmp_path / "t.off")]) == 2
    err = _one_error_line(capsys)
    assert f"-o/--output {tmp_path / 't.off'}: expected .obj or .ply, OFF cannot store" in err, err
    assert "mesh.copy" not in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value, allowed", [("--spiral-length", "0", ">= 1"), ("--dilation", "-2", ">= 1"),
                                                    ("--texture-size", "-1", "in [0, 8192]"),
                                                    ("--texture-size", "8193", "in [0, 8192]")])
def test_hierarchy_integer_options_name_the_option(option, value, allowed, tmp_path, capsys):
    """--spiral-length 0 was refused as 'spiral_lengths[0]: ...' and --texture-size 8193 as 'texture_size: ...'
    (build_hierarchy's parameters, not the options)."""
    from mesh_decoder.mesh.uv import MAX_MAP_SIZE

    assert MAX_MAP_SIZE == 8192  # the limit the option states is the library's
    assert main(["hierarchy", option, value, "-o", str(tmp_path / "h.npz")]) == 2
    err = _one_error_line(capsys)
    assert re.search(rf"argument {option}(/{option}s)?: expected an integer {re.escape(allowed)}, got '{value}'", err), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--spiral-length", "--dilation"])
def test_hierarchy_per_level_counts_name_the_option(option, tmp_path, capsys):
    """Two values for five levels was refused as 'spiral_lengths: expected 5 values' (the Python name)."""
    assert main(["hierarchy", "--factors", "4", "4", "4", "4", option, "2", "3", "-o", str(tmp_path / "h.npz")]) == 2
    err = _one_error_line(capsys)
    assert f"error: mesh-decoder hierarchy: {option} 2 3: expected one value for every level or 5 (one per level: --factors gives 4 " \
           "below the template), got 2" in err, err
    assert list(tmp_path.iterdir()) == []


def test_hierarchy_factors_too_deep_for_the_template_name_the_option_and_file(tmp_path, capsys):
    """The error named neither --factors nor the template (and read 'leave 1 vertices')."""
    template = tmp_path / "t.obj"
    assert main(["template", "--vertices", "600", "-o", str(template)]) == 0
    capsys.readouterr()
    out = tmp_path / "h.npz"
    assert main(["hierarchy", str(template), "--factors", "4", "4", "4", "4", "-o", str(out)]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: --factors 4 4 4 4: {template} has 600 vertices: factors (4.0, 4.0, 4.0, 4.0) "
                          "leave 3 vertices at level 4 (sizes [600, 150, 38, 10, 3])"), err
    assert err.rstrip().endswith("give fewer or smaller factors"), err
    assert not out.exists()
    assert main(["hierarchy", str(template), "--factors", "600", "-o", str(out)]) == 1
    assert "leave 1 vertex at level 1 (sizes [600, 1])" in _one_error_line(capsys)


def test_a_template_the_hierarchy_cannot_use_is_named_by_hierarchy_and_train(tmp_path, capsys):
    """A template with a vertex in no face: 'vertex 600 is not used by any face' named neither the mesh file
    nor, in train, the config; factors too deep for the built-in template named neither the config nor the
    key its default comes from."""
    import yaml

    template = tmp_path / "t.obj"
    assert main(["template", "--vertices", "600", "-o", str(template)]) == 0
    lines = template.read_text().splitlines()
    loose = tmp_path / "loose.obj"  # its header comment dropped: the file is edited on purpose
    loose.write_text("\n".join(lines[1:] + [f"v {' '.join(str(float(x)) for x in torch.randn(3).tolist())}"]) + "\n")
    capsys.readouterr()
    assert main(["hierarchy", str(loose), "--factors", "4", "4", "-o", str(tmp_path / "h.npz")]) == 1
    assert _one_error_line(capsys).strip() == (f"error: {loose}: vertex 600 is not used by any face (1 unreferenced "
                                                "vertices); expected every vertex to belong to a face (remove "
                                                "isolated vertices first)")
    config = tmp_path / "c.yaml"
    scans = tmp_path / "scans"  # meshes of that template (the synthetic generator refuses a template not its own)
    scans.mkdir()
    for i in range(4):
        (scans / f"s{i}.obj").write_text(loose.read_text())
    config.write_text(yaml.safe_dump({"template": {"kind": "file", "path": str(loose)},
                                      "data": {"source": "folder", "root": str(scans), "test_fraction": 0.25},
                                      "hierarchy": {"factors": [4, 4]}, "model": {"channels": [8, 8]}}))
    assert main(["train", str(config), "-o", str(tmp_path / "run")]) == 1
    assert _one_error_line(capsys).startswith(f"error: {config}: the hierarchy of template.path {loose} (601 "
                                              "vertices): vertex 600 is not used by any face")
    for model, origin in (({}, "the default"), ({"preset": "coma"}, "from model.preset 'coma'")):
        config.write_text(yaml.safe_dump({"template": {"vertices": 500}, "model": model}))
        assert main(["train", str(config), "-o", str(tmp_path / "run")]) == 1
        assert _one_error_line(capsys).startswith(
            f"error: {config}: hierarchy.factors: [4, 4, 4, 4] ({origin}) on the built-in face template (500 "
            "vertices): factors (4, 4, 4, 4) leave 2 vertices at level 4")
    assert not (tmp_path / "run").exists() and not (tmp_path / "h.npz").exists()


def test_mirrored_uvs_are_taken_with_allow_uv_overlap_by_hierarchy_and_train(tmp_path, capsys):
    """The overlap error of the hierarchy command and of train said 'pass allow_overlap=True', an argument of
    texel_map that neither the command nor the config had."""
    import yaml

    from mesh_decoder.hierarchy import load_hierarchy
    from mesh_decoder.mesh import face_template, save_mesh

    face = face_template(500)
    uv = face.uv.copy()
    uv[:, 0] = 0.5 - np.abs(uv[:, 0] - 0.5)  # the right half's UVs mirrored onto the left half's
    template = tmp_path / "mirrored.obj"
    save_mesh(face.copy(uv=uv), template)
    out = tmp_path / "h.npz"
    args = ["hierarchy", str(template), "--factors", "4", "4", "--texture-size", "32", "-o", str(out)]
    assert main(args) == 1
    assert re.fullmatch(rf"error: {re.escape(str(template))}: texel map of the template: UV triangles of faces \d+ and \d+ overlap: .*; fix the "
                        r"UVs, pass --allow-uv-overlap \(the lowest face colours a shared texel\) or build without "
                        r"a texel map: --texture-size 0", _one_error_line(capsys).strip())
    assert not out.exists()
    assert main(args + ["--allow-uv-overlap"]) == 0
    assert load_hierarchy(out).meta["allow_uv_overlap"] is True
    config = tmp_path / "c.yaml"
    section = {"factors": [4, 4], "texture_size": 32, "cache_dir": False}
    body = {"template": {"kind": "file", "path": str(template)}, "hierarchy": section,
            "data": {"source": "synthetic", "n": 12}, "model": {"channels": [8, 8], "joint": True},
            "training": {"epochs": 1, "batch_size": 4}}
    config.write_text(yaml.safe_dump(body))
    capsys.readouterr()
    assert main(["train", str(config), "-o", str(tmp_path / "run"), "--quiet"]) == 1
    assert re.fullmatch(rf"error: {re.escape(str(config))}: hierarchy: template.path "
                        rf"{re.escape(str(template))} \(500 vertices\): texel map of the template: UV triangles of faces \d+ and \d+ overlap: .*; "
                        r"fix the UVs, set hierarchy.allow_uv_overlap: true \(the lowest face colours a shared "
                        r"texel\) or build no texel map: hierarchy.texture_size: 0", _one_error_line(capsys).strip())
    config.write_text(yaml.safe_dump({**body, "hierarchy": {**section, "allow_uv_overlap": True}}))
    assert main(["train", str(config), "-o", str(tmp_path / "run"), "--quiet"]) == 0
    assert load_hierarchy(tmp_path / "run" / "hierarchy.npz").meta["allow_uv_overlap"] is True


@pytest.mark.parametrize("command", ["template", "render"])
@pytest.mark.parametrize("seed", ["-1", "4294967296", "99999999999999999999"])
def test_seeds_name_the_option(command, seed, tmp_path, capsys):
    """template --seed -1 was refused as the library's 'seed: ...'; render --seed 99999999999999999999 failed as
    torch's 'Overflow when unpacking long long'. Seeds are integers in [0, 2**32 - 1] everywhere, as in bench."""
    argv = {"template": ["template", "-o", str(tmp_path / "t.obj")],
            "render": ["render", str(tmp_path), "-o", str(tmp_path / "g.png")]}[command]
    assert main([*argv, "--seed", seed]) == 2
    err = _one_error_line(capsys)
    assert f"mesh-decoder {command}: argument --seed: expected an integer in [0, 4294967295], got '{seed}'" in err
    assert list(tmp_path.iterdir()) == []


def test_torch_out_of_memory_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    """torch's CPU allocator fails with a RuntimeError, not a MemoryError: render --image-size 100000 ended in a
    traceback. Other RuntimeErrors still propagate."""
    import mesh_decoder.render as render

    size = int(np.random.default_rng().integers(10**10, 10**11))

    def grid(*args, **kwargs):
        raise RuntimeError(f"[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           f"memory: you tried to allocate {size} bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(render, "face_grid", grid)
    assert main(["render", str(tiny_run), "--n", "2", "-o", str(tmp_path / "g.png")]) == 1
    err = _one_error_line(capsys)
    assert err.startswith("error: out of memory ([enforce fail") and f"allocate {size} bytes" in err, err
    assert err.rstrip().endswith("try smaller sizes"), err
    monkeypatch.setattr(render, "face_grid", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["render", str(tiny_run), "--n", "2", "-o", str(tmp_path / "g.png")])


@pytest.mark.parametrize("command", ["hierarchy", "train", "evaluate", "render", "sample", "fit"])
def test_threads_option_sets_torchs_threads_for_the_command(command, monkeypatch):
    """fit and train had no way to keep to fewer threads on a shared machine (bench had --threads)."""
    import os

    import mesh_decoder.cli as cli

    seen = {}
    monkeypatch.setattr(torch, "set_num_threads", lambda n: seen.setdefault("threads", n))
    args = {"hierarchy": [], "train": ["c.yaml", "-o", "run"], "evaluate": ["run"], "render": ["run", "-o", "g.png"],
            "sample": ["run", "-o", "faces"], "fit": ["m.safetensors", "--target", "t.obj", "-o", "f.obj"]}[command]
    parsed = cli.build_parser().parse_args([command, *args, "--threads", "1"])
    cli._apply_threads(parsed)
    assert seen == {"threads": 1}
    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(ValueError, match=rf"^--threads: expected an integer in \[1, {too_many - 1}\]"):
        cli._apply_threads(cli.build_parser().parse_args([command, *args, "--threads", str(too_many)]))


def test_a_closed_stdout_stops_quietly(tmp_path):
    """`mesh-decoder template --info | head -2` ended with 'error: [Errno 32] Broken pipe' and exit 1."""
    proc = subprocess.Popen([sys.executable, "-m", "mesh_decoder.cli", "template", "--info"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the command prints
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""


def test_a_failed_decimation_names_the_mesh_file(tmp_path, capsys):
    """The mesh file was named for validation errors but not for a decimation that failed on it."""
    from mesh_decoder.mesh import face_template, save_mesh

    face = face_template(500)
    vertices = face.vertices.copy()
    f = int(np.random.default_rng().integers(face.num_faces))
    vertices[face.faces[f]] = vertices[face.faces[f, 0]]  # a zero-area face no decimation removes
    path = tmp_path / "flat spot.obj"
    save_mesh(face.copy(vertices=vertices), path)
    capsys.readouterr()
    assert main(["hierarchy", str(path), "--factors", "1.1", "--texture-size", "0"]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {path}: cannot decimate 500 -> 455 vertices") and "zero area" in err, err


@pytest.mark.parametrize("argv, message", [
    (["pca", "configs/tiny.yaml", "-o", "p.npz"], r"-o/--output p\.npz: expected a file name ending in \.safetensors, got '\.npz'"),
    (["evaluate", "RUN", "--json", "ev.txt"], r"--json ev\.txt: expected a file name ending in \.json"),
    (["fit", "RUN", "--target", "t.obj", "-o", "f.xyz"], r"-o/--output f\.xyz: expected a file name ending in "),
    (["fit", "RUN", "--target", "t.obj"], r"mesh-decoder fit: give at least one of -o/--output MESH"),
    (["fit", "RUN", "--target", "t.obj", "-o", "f.obj", "--stages", "pose:x"], r"--stages pose:x: "),
    (["template", "--vertices", "600", "-o", "t.xyz"], r"-o/--output t\.xyz: expected \.obj or \.ply"),
    (["template", "--bogus"], r"mesh-decoder template: unrecognized arguments: --bogus \(mesh-decoder template "
                              r"--help lists its options\)"),
])
def test_every_argument_mistake_exits_2(argv, message, tmp_path, capsys, monkeypatch):
    """A wrong output extension exited 2 in template, hierarchy and render but 1 in pca, fit and evaluate; an
    unknown option named 'mesh-decoder', not the command, and gave no hint. Checked before any file is read (the
    model and target here do not exist)."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = _one_error_line(capsys)
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []


def test_a_bad_path_still_exits_1(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["template", "--vertices", "600", "-o", str(tmp_path / "taken")]) == 1
    assert "expected a file path, found a directory" in _one_error_line(capsys)


def test_option_spellings_shared_across_commands(tmp_path, capsys):
    """bench had no -o and sample no --output-dir (train has both); bench's --no-progress is train's --quiet;
    hierarchy's list options were singular (--spiral-length) where the others are plural (--factors)."""
    from mesh_decoder.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    bench = sub["bench"].parse_args(["-o", "here", "--quiet"])
    assert bench.output_dir == "here" and bench.no_progress
    assert sub["sample"].parse_args(["RUN", "--output-dir", "there"]).output == "there"
    h = sub["hierarchy"].parse_args(["--spiral-lengths", "9", "7", "5", "--dilations", "1", "2", "1"])
    assert (h.spiral_length, h.dilation) == ([9, 7, 5], [1, 2, 1])
    assert sub["evaluate"].parse_args(["RUN", "--n", "7"]).num_samples == 7  # render's and sample's --n


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys):
    """Ctrl-C during the seconds the console script spends importing torch printed a 51-line traceback."""
    import types

    from mesh_decoder import _entry

    class Importing(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "mesh_decoder.cli", Importing("mesh_decoder.cli"))
    assert _entry.main() == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_export_writes_an_onnx_file_with_the_prior_and_the_template(tiny_run, tiny_joint_run, tmp_path, capsys):
    """A deployer had only the benchmark's export_onnx: no command, and a file without the latent prior that
    `sample` draws from or the faces the vertices index into."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    import json

    from mesh_decoder.bench.onnx_export import OnnxRunner
    from mesh_decoder.fit.command import _load
    from mesh_decoder.mesh import load_mesh
    from mesh_decoder.model_files import read_model_meta

    from mesh_decoder.bench.onnx_export import onnx_output_names

    for run in (tiny_run, tiny_joint_run):
        out = tmp_path / f"{run.name}.onnx"
        assert main(["export", str(run), "-o", str(out), "--write-template", str(tmp_path / f"{run.name}.obj")]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith(f"wrote {out} (") and "input z (B, " in printed, printed
        runner = OnnxRunner(out)
        meta = runner.metadata
        stored = read_model_meta(run / "decoder.safetensors")["extra_meta"]["latent_prior"]
        assert json.loads(meta["mesh_decoder.latent_prior"])["shape"] == stored
        decoder, template, _, _ = _load(argparse.Namespace(model=str(run / "decoder.safetensors"), hierarchy=None,
                                                           template=None, device="cpu"))
        assert meta["mesh_decoder.template_hash"] == template.content_hash()
        written = load_mesh(tmp_path / f"{run.name}.obj")
        np.testing.assert_array_equal(written.faces, template.faces)
        z = torch.randn(3, decoder.latent_size)
        with torch.no_grad():
            want = decoder(z)
        if isinstance(want, torch.Tensor) and want.shape[-1] == 6:  # xyz then rgb: exported as two outputs
            want = (want[..., :3], want[..., 3:])
            assert runner.output_names == ["vertices", "colors"]
        else:
            assert runner.output_names == onnx_output_names(want)
        assert runner.output_names == json.loads(meta["mesh_decoder.outputs"])
        want = [want] if isinstance(want, torch.Tensor) else [t for t in want if t is not None]
        for got, expected in zip(runner(z), want):
            if expected.is_floating_point():
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
            else:
                assert torch.equal(got.to(expected.dtype), expected)
    assert main(["export", str(tiny_run), "-o", str(tmp_path / "x.txt")]) == 2
    assert "-o/--output " in _one_error_line(capsys) and not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("opset", [7, 30])
def test_an_opset_no_exporter_writes_is_one_error_line_and_nothing_on_stdout(opset, tiny_run, tmp_path, capfd):
    """export --opset 7 (or 30) ended in a traceback, and the TorchScript exporter's C++ logger wrote the graph
    it failed on (hundreds of lines) to stdout."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")  # its load check refuses the opset-7 file (ConstantOfShape needs 9)
    out = tmp_path / "x.onnx"
    assert main(["export", str(tiny_run), "-o", str(out), "--opset", str(opset)]) == 1
    captured = capfd.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured
    assert captured.err.startswith(f"error: opset {opset}: no exporter wrote this model at that opset (dynamo: ")
    assert "leave the opset out for the exporter's default" in captured.err and not out.exists()


def test_export_keeps_colour_apart_and_whole(tiny_joint_run, tmp_path, capsys):
    """A colour PCA model exported its shape only (its colour prior written beside it); a joint autoencoder's
    model.safetensors exported xyz and rgb as one output named vertices."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from mesh_decoder.bench.onnx_export import OnnxRunner
    from mesh_decoder.model_files import load_model
    from mesh_decoder.pca import PCAModel

    pca = tmp_path / "pca.safetensors"
    assert main(["pca", str(tiny_joint_run / "config.yaml"), "--components", "3", "--color-components", "2",
                 "-o", str(pca)]) == 0
    assert main(["export", str(pca), "-o", str(tmp_path / "pca.onnx")]) == 0
    assert "input z (B, 5) float32; outputs vertices (B, " in capsys.readouterr().out
    runner, model = OnnxRunner(tmp_path / "pca.onnx"), load_model(pca)
    assert isinstance(model, PCAModel) and runner.output_names == ["vertices", "colors"]
    z = torch.randn(4, 5)
    with torch.no_grad():
        want = model.decode_joint(z[:, :3], z[:, 3:])
    for got, expected in zip(runner(z), want):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))

    assert main(["export", str(tiny_joint_run / "model.safetensors"), "-o", str(tmp_path / "ae.onnx")]) == 0
    capsys.readouterr()
    from mesh_decoder.hierarchy import load_hierarchy

    autoencoder = load_model(tiny_joint_run / "model.safetensors", load_hierarchy(tiny_joint_run / "hierarchy.npz"))
    runner = OnnxRunner(tmp_path / "ae.onnx")
    assert runner.output_names == ["vertices", "colors"]
    z = torch.randn(2, autoencoder.latent_size)
    with torch.no_grad():
        want = autoencoder.decode(z)  # (B, V, 6)
    vertices, colors = runner(z)
    torch.testing.assert_close(vertices, want[..., :3], rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    torch.testing.assert_close(colors, want[..., 3:], rtol=1e-4, atol=1e-4)


def test_python_dash_m_runs_the_command():
    """`python -m mesh_decoder` said the package cannot be directly executed."""
    proc = subprocess.run([sys.executable, "-m", "mesh_decoder", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mesh_decoder {__version__}", proc


def _commands() -> dict[str, argparse.ArgumentParser]:
    from mesh_decoder.cli import build_parser

    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _empty_path_cases():
    from mesh_decoder.cli import PATH_OPTIONS

    for command, parser in _commands().items():
        for action in parser._actions:
            if action.dest in PATH_OPTIONS:
                yield pytest.param(command, action.dest, id=f"{command}-{action.dest}")


@pytest.mark.parametrize("command, dest", list(_empty_path_cases()))
def test_an_empty_path_is_a_usage_error_in_every_command(command, dest, tmp_path, monkeypatch, capsys):
    """'' (an unset shell variable in -o "$RUN") was taken as not given in some commands (hierarchy -o ''
    built the hierarchy, saved nothing and exited 0) and as a bad path (status 1) in others."""
    monkeypatch.chdir(tmp_path)
    argv = [command]
    actions = _commands()[command]._actions
    action = next(a for a in actions if a.dest == dest)
    for other in actions:
        value = "" if other is action else "missing.file"
        if not other.option_strings and other.dest != "help":  # positional
            argv.append(value)
        elif other is action or other.required:
            argv += [other.option_strings[0], value]
    assert main(argv) == 2, argv
    name = "/".join(action.option_strings) or action.metavar or action.dest
    assert capsys.readouterr().err == f"error: mesh-decoder {command}: {name}: expected a path, got ''\n"
    assert list(tmp_path.iterdir()) == []  # nothing read, nothing written


def test_every_text_option_is_a_path_or_checked_on_its_own():
    """A new path option must join PATH_OPTIONS (or its empty value is taken as not given)."""
    from mesh_decoder.cli import PATH_OPTIONS

    checked_elsewhere = {"device", "file_prefix", "stages"}  # malformed values: usage errors of their own
    text = {a.dest for p in _commands().values() for a in p._actions
            if a.type in (None, str) and a.choices is None and a.nargs != 0 and a.dest != "help"
            and not isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
                                   argparse._VersionAction))}
    assert text - checked_elsewhere == set(PATH_OPTIONS), text ^ (PATH_OPTIONS | checked_elsewhere)
    for dest, value in (("device", ""), ("file_prefix", "")):
        argv = {"device": ["fit", "m.pt", "--target", "t.obj", "-o", "x.obj", "--device", value],
                "file_prefix": ["bench", "--file-prefix", value]}[dest]
        assert main(argv) == 2, argv
