"""Latent-size sweep: spiral and Chebyshev autoencoders against PCA on the frozen synthetic faces.

For latent sizes 4, 8, 16, 32 and 64, on COMA's interpolation split (random
10 % held out) and extrapolation split (held-out expressions, ``jaw_open > 0.7``)
of the synthetic morphable faces (``synthetic-faces-1``, default 5,023-vertex
face template), it trains

* the SpiralNet++ autoencoder (``spiralnet++-coma`` architecture, latent size changed),
* the COMA autoencoder (``coma`` architecture: Chebyshev K = 6, latent size changed),

with :func:`mesh_decoder.train.train`, fits PCA with as many components to the
same training faces (once per split, with 64 components, truncated), and
reports with :func:`mesh_decoder.train.evaluate` the test per-vertex error
(mean, median, std, in mm), the parameter counts and the CPU training time.

The training budget is a few epochs on a shared CPU (see ``--epochs``), far
below the papers' 300 epochs: the autoencoders are under-trained, and the
result says so. Results are written after every model, so a partial run is
still useful; the file is ``benchmarks/results/sweep_latent_<machine>.json``
with the environment (CPU model, threads, torch version, git commit).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/sweep_latent.py              # the full sweep
    python benchmarks/sweep_latent.py --latent-sizes 8 --splits interpolation --epochs 1 --n 300
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from mesh_decoder._checks import check_output_path, int_argument
from mesh_decoder.bench.report import check_threads, environment, machine_slug, naming_options, script_main, write_json
from mesh_decoder.data import GENERATOR_VERSION
from mesh_decoder.pca import PCAModel
from mesh_decoder.train import TrainConfig, evaluate, load_data, make_hierarchy, train
from mesh_decoder.train.evaluate import MEASURES

LATENT_SIZES = (4, 8, 16, 32, 64)
SPLITS = ("interpolation", "extrapolation")
METHODS = {  # name -> model section of the config
    "spiral": {"preset": "spiralnet++-coma"},
    "cheb": {"preset": "coma"},
}
#: Learning rates of the papers: SpiralNet++ 1e-3, COMA 8e-3 (both decayed by 0.99 per epoch).
PAPER_LR = {"spiral": 1e-3, "cheb": 8e-3}
#: The config keys :func:`make_config` sets from options, as its errors name them -> the options
#: (``training.lr`` is ``--lr-<method>``, see :func:`config_options`).
CONFIG_OPTIONS = {
    "config: template.vertices": "--vertices", "config: data.n": "--n", "config: data.seed": "--seed",
    "config: model.latent_size": "--latent-sizes", "config: training.epochs": "--epochs",
    "config: training.checkpoint_every": "--epochs", "config: training.batch_size": "--batch-size",
    "config: training.lr_decay": "--lr-decay", "config: training.seed": "--seed",
    "config: hierarchy.cache_dir": "--cache-dir",
}


def config_options(method: str | None) -> dict[str, str]:
    """:data:`CONFIG_OPTIONS` with ``training.lr``, which comes from ``--lr-<method>`` (``None``: spiral)."""
    return {**CONFIG_OPTIONS, "config: training.lr": f"--lr-{method or 'spiral'}"}


def make_config(args, split: str, method: str | None, latent_size: int) -> TrainConfig:
    """The training config of one autoencoder of the sweep (``method=None``: the data sections only)."""
    model = dict(METHODS[method or "spiral"], latent_size=latent_size)
    return TrainConfig.from_dict({
        "template": {"kind": "face", "vertices": args.vertices, "seed": 0},
        "hierarchy": {"texture_size": 0, "cache_dir": args.cache_dir or True},
        "data": {"source": "synthetic", "n": args.n, "seed": args.seed, "split": split},
        "model": model,
        "training": {"epochs": args.epochs, "batch_size": args.batch_size,
                     "lr": getattr(args, f"lr_{method or 'spiral'}"),
                     "lr_decay": args.lr_decay, "seed": args.seed, "checkpoint_every": args.epochs},
    })


def markdown_table(rows: list[dict]) -> str:
    """One line per (split, latent size): mean / median test error and parameters of every method."""
    methods = [m for m in ("spiral", "cheb", "pca") if any(r["method"] == m for r in rows)]
    names = {"spiral": "SpiralNet++ AE", "cheb": "COMA AE", "pca": "PCA"}
    head = "| split | latent | " + " | ".join(f"{names[m]} mean / median (mm) | {names[m]} params" for m in methods) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(methods))]
    keys = sorted({(r["split"], r["latent_size"]) for r in rows}, key=lambda k: (SPLITS.index(k[0]), k[1]))
    for split, k in keys:
        cells = []
        for m in methods:
            row = next((r for r in rows if (r["split"], r["latent_size"], r["method"]) == (split, k, m)), None)
            if row is None:
                cells += ["-", "-"]
            else:
                cells += [f"{row['test_mean_mm']:.3f} / {row['test_median_mm']:.3f}", f"{row['parameters']:,}"]
        lines.append(f"| {split} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _main(argv: list[str] | None, made: list[Path]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent-sizes", type=int, nargs="+", default=list(LATENT_SIZES))
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--n", type=int, default=2000, help="synthetic faces drawn per split (default 2000)")
    parser.add_argument("--vertices", type=int, default=5023, help="face template size (default 5023)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr-spiral", type=float, default=PAPER_LR["spiral"], help="default 1e-3 (SpiralNet++)")
    parser.add_argument("--lr-cheb", type=float, default=PAPER_LR["cheb"], help="default 8e-3 (COMA)")
    parser.add_argument("--lr-decay", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measures", nargs="+", choices=MEASURES, default=["error"],
                        help="evaluate() measures (default: errors only, the sweep's budget)")
    parser.add_argument("--threads", type=int_argument(1), default=None,
                        help="torch.set_num_threads (default: as the environment)")
    parser.add_argument("--cache-dir", default=None, help="hierarchy cache (default: the library's cache folder)")
    parser.add_argument("--work-dir", default=None, help="folder of the training runs (default: a temporary one)")
    parser.add_argument("--output-dir", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--output", default=None, help="result file (default: OUTPUT_DIR/sweep_latent_<machine>.json)")
    args = parser.parse_args(argv)

    # Every run's config is checked before any work: a bad --latent-sizes value failed only when its
    # turn came, after the result file had been replaced by one with no rows.
    try:
        for k in args.latent_sizes:
            for split in args.splits:
                for method in args.methods:
                    with naming_options(config_options(method)):  # TrainConfigError names the config key
                        make_config(args, split, method, k)
        check_threads(args.threads)  # a huge thread pool crashed torch (segfault)
    except ValueError as exc:
        parser.error(str(exc))
    if args.output:  # before the work, not after it
        check_output_path(args.output, "--output")
    else:
        check_output_path(args.output_dir, "--output-dir", directory=True)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    out_path = Path(args.output or Path(args.output_dir) / f"sweep_latent_{machine_slug('cpu', threads)}.json")
    if args.work_dir:
        work = Path(args.work_dir)
    else:
        work = Path(tempfile.mkdtemp(prefix="sweep_latent_"))
        made.append(work)  # removed by main(), also when the sweep fails
    started = time.perf_counter()
    payload = {
        "benchmark": "sweep_latent",
        "status": "running",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment("cpu", threads),
        "data": {
            "generator_version": GENERATOR_VERSION,
            "template": f"face_template({args.vertices}, seed=0)",
            "n_per_split": args.n,
            "seed": args.seed,
            "splits": {"interpolation": "random, test_fraction 0.1",
                       "extrapolation": "test = jaw_open > 0.7"},
        },
        "budget": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": "Adam",
            "lr": {"spiral": args.lr_spiral, "cheb": args.lr_cheb},
            "lr_schedule": f"exponential, x{args.lr_decay} per epoch",
            "loss": "L1 on per-vertex standardised coordinates",
            "measures": list(args.measures),
            "note": (f"{args.epochs} epochs on a shared CPU: the autoencoders are under-trained relative to the papers "
                     "(COMA and SpiralNet++ train 300 epochs); PCA is fitted exactly. Learning rates are the papers' "
                     "(tuned for 300 epochs), not tuned for this budget. Training time is CPU wall time of the "
                     "epochs (without data generation, latent prior fit and saving; wall_seconds includes them)."),
        },
        "architectures": {
            "spiral": "spiralnet++-coma: SpiralConv, channels (32, 32, 32, 64), spirals of 9, factors (4, 4, 4, 4)",
            "cheb": "coma: ChebConv K=6, channels (16, 16, 16, 32), factors (4, 4, 4, 4)",
            "pca": "PCAModel with K = latent size components; parameters = mean (3V) + components (K x 3V)",
        },
        "rows": [],
    }

    def flush(status: str = "running") -> None:
        payload["status"] = status
        payload["elapsed_s"] = round(time.perf_counter() - started, 1)
        payload["table_markdown"] = markdown_table(payload["rows"])
        write_json(out_path, payload)

    data, pcas = {}, {}
    # The presets' factors need enough vertices, and the splits enough faces: their errors name the option
    # (the hierarchies are built now, cached for training, so that a bad --vertices fails before the file is)
    data_options = {"factors": f"--vertices {args.vertices}: factors", "config: data": f"--n {args.n}: data",
                    "config: hierarchy.factors": f"--vertices {args.vertices}: hierarchy.factors"}
    for split in args.splits:  # setup: data and PCA once per split
        tick = time.perf_counter()
        with naming_options(data_options):
            data[split] = load_data(make_config(args, split, None, max(args.latent_sizes)))
            for method in args.methods:
                make_hierarchy(make_config(args, split, method, max(args.latent_sizes)), data[split].template)
        if data[split].test.shape[0] == 0:  # evaluate() refused it, after the first training
            raise ValueError(f"--n {args.n}: expected held-out test faces, the {split} split of {args.n} faces "
                             "holds out none")
        gen_s = time.perf_counter() - tick
        tick = time.perf_counter()
        pcas[split] = PCAModel.fit(data[split].train.double(), num_components=max(args.latent_sizes)).float()
        payload.setdefault("setup", {})[split] = {
            "num_train": int(data[split].train.shape[0]), "num_test": int(data[split].test.shape[0]),
            "data_seconds": round(gen_s, 2), "pca_fit_seconds": round(time.perf_counter() - tick, 2),
            "pca_components_fitted": max(args.latent_sizes),
        }
        print(f"{split}: {payload['setup'][split]}", flush=True)
    flush()

    for k in args.latent_sizes:
        for split in args.splits:
            for method in args.methods:
                config = make_config(args, split, method, k)
                run_dir = work / f"{split}_{method}_{k}"
                shutil.rmtree(run_dir, ignore_errors=True)
                tick = time.perf_counter()
                result = train(config, run_dir, progress=False, data=data[split])
                wall = time.perf_counter() - tick
                ev = evaluate(result, data=data[split], pca=pcas[split], measures=args.measures)
                ae, pca = ev["models"]["autoencoder"], ev["models"]["pca"]
                row = {
                    "split": split, "latent_size": k, "method": method, "architecture": ae["name"],
                    "parameters": ae["parameters"], "decoder_parameters": ae["decoder_parameters"],
                    "test_mean_mm": ae["vertex_error"]["mean"], "test_median_mm": ae["vertex_error"]["median"],
                    "test_std_mm": ae["vertex_error"]["std"], "test_max_mm": ae["vertex_error"]["max"],
                    "train_seconds": round(result.train_seconds, 2), "wall_seconds": round(wall, 2),
                    "epochs": result.epochs_completed, "steps": result.step,
                    "final_loss": result.final_loss,
                    "meshes_per_s": result.history[-1]["meshes_per_s"],
                    "load_average_1min": round(os.getloadavg()[0], 2),  # the CPU is shared: context for the times
                }
                for key in ("explained_variance", "specificity"):
                    if key in ae:
                        row[key] = ae[key]
                payload["rows"].append(row)
                if not any(r["method"] == "pca" and r["split"] == split and r["latent_size"] == k
                           for r in payload["rows"]):
                    payload["rows"].append({
                        "split": split, "latent_size": k, "method": "pca", "architecture": "PCA",
                        "parameters": pca["parameters"], "decoder_parameters": pca["decoder_parameters"],
                        "test_mean_mm": pca["vertex_error"]["mean"], "test_median_mm": pca["vertex_error"]["median"],
                        "test_std_mm": pca["vertex_error"]["std"], "test_max_mm": pca["vertex_error"]["max"],
                        "train_seconds": payload["setup"][split]["pca_fit_seconds"],
                        **{key: pca[key] for key in ("explained_variance", "specificity") if key in pca},
                    })
                print(f"{split:>13} K={k:<3} {method:>6}: test mean {row['test_mean_mm']:.3f} mm "
                      f"(PCA {pca['vertex_error']['mean']:.3f}), {row['train_seconds']:.0f} s training, "
                      f"loss {row['final_loss']:.4f}", flush=True)
                flush()
                shutil.rmtree(run_dir, ignore_errors=True)
    flush("complete")
    print(payload["table_markdown"])
    print(f"wrote {out_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The sweep (see the module docstring); a temporary work folder it made is removed however it ends."""
    made: list[Path] = []
    try:
        return _main(argv, made)
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(script_main(main))
