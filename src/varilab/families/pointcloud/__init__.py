"""The point-cloud family: a point-cloud VAE (`pointcloud-ae`), the generator G and the encoder E of Squeeze3D, and
Squeeze3D itself (`squeeze3d`): small mapping networks between a frozen E run and a frozen G run, trained only on G's
samples, that turn a shape into a code of --bits bits and back (papers.md section 17).

    varilab train --model pointcloud-ae --out runs/G
    varilab train --model pointcloud-ae --seed 1 --out runs/E
    varilab train --model squeeze3d --generator runs/G --encoder runs/E --bits 16 --out runs/s16

A squeeze3d run holds E's and G's weights beside its own (config.json records their configurations), so it decodes
without the runs it was trained from."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from .. import folder
from ..collapse import ActivityFlags, encoder_diagnosis
from ..options import TrainOptions, non_negative, non_negative_int, option, positive_int
from ..protocol import Family, Run
from ..registry import register
from .files import COMPRESS, DECOMPRESS

MODELS = {"pointcloud-ae": "a point-cloud VAE (PointNet-lite encoder, MLP decoder to --points points, a Gaussian "
                           "latent): Squeeze3D's generator G and, trained from another seed, its encoder E",
          "squeeze3d": "mapping networks between a frozen encoder run and a frozen generator run, trained only on the "
                       "generator's samples: shapes to codes of --bits bits and back"}
AE, SQ = ("pointcloud-ae",), ("squeeze3d",)
HELD_OUT = 200  # procedural shapes a squeeze3d run is evaluated on (another seed than its generator's data)


def _run_given(v):
    return None if v else "must be given: a pointcloud-ae run folder"


@dataclass
class PointCloudOptions(TrainOptions):
    DEFAULTS = {"data": "shapes", "epochs": 50, "batch_size": 64, "lr": 1e-3}
    PER_MODEL = {"squeeze3d": {"epochs": 60, "batch_size": 256}}
    HELP = {"data": "shapes (procedural spheres, boxes, tori, cylinders, cones and capsules) or a .npy [shapes, "
                    "points, 3]; squeeze3d trains on its generator's samples and is evaluated on held-out shapes"}
    model: str = option("pointcloud-ae", "the model", choices=MODELS)
    points: int = option(512, "points per shape", check=positive_int.upto(100_000), models=AE)
    shapes: int = option(2000, "shapes: how many procedural shapes are made", check=positive_int.upto(1_000_000),
                         models=AE)
    latent: int = option(16, "latent dimensions", check=positive_int.upto(4096), models=AE)
    width: int = option(256, "hidden width of the encoder's head and of the decoder", check=positive_int.upto(8192),
                        models=AE)
    decoder: str = option("mlp", "the decoder: mlp (latent to all coordinates at once) or fold (a fixed sphere of "
                          "points, each with the latent, through a shared MLP)", choices=("mlp", "fold"), models=AE)
    beta: float = option(1e-4, "weight of the KL against the per-point Chamfer distance",
                         check=non_negative.upto(1e4), models=AE)
    kl_warmup_epochs: int = option(8, "epochs of linear KL warm-up from 0 to --beta (0: off)",
                                   check=non_negative_int.upto(100_000), models=AE)
    generator: str | None = option(None, "the generator G: a pointcloud-ae run", check=_run_given, models=SQ)
    encoder: str | None = option(None, "the encoder E: another pointcloud-ae run (another seed)", check=_run_given,
                                 models=SQ)
    bits: int = option(16, "code length in bits (a multiple of --code-dims)", check=positive_int.upto(1024), models=SQ)
    code_dims: int = option(4, "scalars in the code, each of bits / code-dims bits", check=positive_int.upto(1024),
                            models=SQ)
    hidden: int = option(128, "width of the mapping networks f and g", check=positive_int.upto(8192), models=SQ)
    samples: int = option(20_000, "generator samples drawn once to train on (and a fifth more to test on)",
                          check=positive_int.upto(10_000_000), models=SQ)


def load_shapes(opts: PointCloudOptions, spec: str | None = None, points: int | None = None):
    """The data as a `Dataset` of flattened clouds [N, points * 3]."""
    from ...data import make_dataset
    from ...data import pointclouds as pc

    spec, points = spec or opts.data, points or opts.points
    if spec == "shapes":
        x, _ = pc.procedural(opts.shapes, points=points, seed=opts.seed)
    else:
        x = pc.read_points(spec, points=points, seed=opts.seed)
    return make_dataset(Path(spec).stem, x.reshape(len(x), -1), test_fraction=opts.test_fraction, seed=opts.seed)


def ae_config(opts: PointCloudOptions):
    from ...models.pointcloud.autoencoder import PointCloudAEConfig

    return PointCloudAEConfig(points=opts.points, latent=opts.latent, width=opts.width, beta=opts.beta,
                              decoder=opts.decoder)


def make_model(opts: PointCloudOptions, parts: dict | None = None):
    """A pointcloud-ae, or a squeeze3d around the E and G of `parts` ({"encoder": config, "generator": config})."""
    import torch

    from ...models.pointcloud.autoencoder import PointCloudAE, PointCloudAEConfig
    from ...models.pointcloud.squeeze3d import Squeeze3D, Squeeze3DConfig

    torch.manual_seed(opts.seed)
    if opts.model in AE:
        return PointCloudAE(ae_config(opts))
    e, g = (PointCloudAE(PointCloudAEConfig(**parts[k])) for k in ("encoder", "generator"))
    return Squeeze3D(Squeeze3DConfig(bits=opts.bits, code_dims=opts.code_dims, hidden=opts.hidden), e, g)


def _latents(model, n: int, seed: int):
    """A `Dataset` of generator latents l ~ N(0, I) and E's means of their shapes, rows [l, mean of E(G(l))]: what
    squeeze3d trains on (E and G are frozen, so each shape is made and encoded once)."""
    import torch

    from ...data import Dataset
    from ...models.pointcloud.squeeze3d import encoded_pairs

    g = torch.Generator().manual_seed(seed)
    train, test = model.draw_latents(n, g), model.draw_latents(max(1, n // 5), g)
    return Dataset("generator samples", encoded_pairs(model, train).cpu(), encoded_pairs(model, test).cpu())


def _frozen_parts(opts: PointCloudOptions) -> tuple[dict, dict]:
    """(their configurations, their weights) of the encoder and generator runs, each checked to be a pointcloud-ae."""
    from ..registry import load

    configs, weights = {}, {}
    for key in ("encoder", "generator"):
        run = load(getattr(opts, key))
        if run.options.model not in AE:
            raise ValueError(f"--{key} {getattr(opts, key)} is a {run.options.model} run, not a pointcloud-ae")
        configs[key] = dataclasses.asdict(run.model.config)
        weights[key] = run.model.state_dict()
    return configs, weights


def train(opts: PointCloudOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    import sys

    from ...train import fit

    if opts.model in AE:
        from ...models.pointcloud.autoencoder import trainer_loss

        ds = load_shapes(opts)
        folder.check_fits(lambda: make_model(opts), f"a pointcloud-ae of {opts.points:,} points",
                          extra_bytes=4 * 4 * opts.batch_size * opts.points * 256)  # the point MLP's activations
        print(ds.summary(), file=sys.stderr)
        model = make_model(opts)
        folder.begin(out, FAMILY, opts, resume)
        beta = opts.beta
        if opts.kl_warmup_epochs:
            from ...core import linear_warmup

            steps = opts.kl_warmup_epochs * -(-len(ds.x_train) // opts.batch_size)
            beta = functools.partial(linear_warmup, warmup_steps=steps, end=opts.beta)
        return fit(model, ds, out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
                   resume=resume, quiet=quiet, objective=trainer_loss, beta=beta)
    from ...models.pointcloud.squeeze3d import squeeze3d_loss

    configs, weights = _frozen_parts(opts)
    model = make_model(opts, configs)
    model.encoder.load_state_dict(weights["encoder"])
    model.generator.load_state_dict(weights["generator"])
    ds = _latents(model, opts.samples, opts.seed)
    print(f"squeeze3d: {opts.bits}-bit codes ({opts.code_dims} x {opts.bits // opts.code_dims} bits) between E "
          f"({configs['encoder']['latent']} latents) and G ({configs['generator']['latent']} latents), trained on "
          f"{opts.samples:,} of G's samples", file=sys.stderr)
    folder.begin(out, FAMILY, opts, resume, encoder_model=configs["encoder"], generator_model=configs["generator"])
    return fit(model, ds, out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed,
               resume=resume, quiet=quiet, objective=squeeze3d_loss)


def load(run_dir: Path, opts: PointCloudOptions, data: str | None = None, raw: dict | None = None) -> Run:
    if opts.model in AE:
        ds = load_shapes(opts, data)
        return Run(run_dir, FAMILY, opts, folder.trained(run_dir, make_model(opts), ds), ds)
    parts = {"encoder": raw["encoder_model"], "generator": raw["generator_model"]}
    model = make_model(opts, parts)
    ds = held_out(opts, parts["generator"]["points"], data)
    return Run(run_dir, FAMILY, opts, folder.trained(run_dir, model, ds), ds)


def held_out(opts: PointCloudOptions, points: int, data: str | None = None):
    """The shapes a squeeze3d run is measured on: `data`, or procedural shapes of a seed its generator never saw."""
    from ...data import make_dataset
    from ...data import pointclouds as pc

    if data is not None and data != "shapes":
        x = pc.read_points(data, points=points, seed=opts.seed)
        name = Path(data).stem
    else:
        x, _ = pc.procedural(HELD_OUT, points=points, seed=10_000 + opts.seed)
        name = "held-out shapes"
    flat = x.reshape(len(x), -1)
    return make_dataset(name, flat, x_test=flat)


def clouds(run: Run, split: str = "test"):
    x = run.data.x_test if split == "test" else run.data.x_train
    return x.reshape(len(x), -1, 3).to(next(run.model.parameters()).device)


def decoded(run: Run, x):
    """The run's reconstruction of clouds x [B, N, 3]: G(mean of q(l|x)), or G(g(Q(f(E(x))))) through the code."""
    import torch

    with torch.no_grad():
        if run.options.model in AE:
            return run.model.reconstruct(x)
        return run.model.decompress(run.model.compress(x))


def evaluate(run: Run) -> dict:
    """Chamfer distance of the test shapes to their reconstructions (mean and 90th percentile); for squeeze3d also
    the code's bytes per shape and the ratio against float32 coordinates."""
    import torch

    from ...core import chamfer, compression_ratio, raw_bytes
    from ...core.chamfer import percentiles

    x = clouds(run)
    d = chamfer(x, decoded(run, x))
    p = percentiles(d, (90,))
    result = {"data": run.data.name, "shapes": len(x), "chamfer": float(d.mean()), "chamfer_p90": p[90]}
    if run.options.model in SQ:
        code = run.options.bits / 8
        result.update(bits=run.options.bits, bytes_per_shape=code,
                      ratio=compression_ratio(raw_bytes(x.shape[1]), code))
        g = run.model.generator
        with torch.no_grad():
            own = chamfer(x, g.reconstruct(x))  # G through its own encoder: what no code can beat
        result.update(chamfer_generator_own=float(own.mean()), **at_equal_bits(run, x, result["chamfer"]))
    return result


def at_equal_bits(run: Run, x, squeeze3d: float) -> dict:
    """The baselines at the run's bits a shape (baselines.py), flat for the metrics table; `squeeze3d`: the run's
    own mean Chamfer distance on x."""
    from . import baselines

    out = {}
    coords = baselines.coordinates(x, run.options.bits)
    if coords:
        out.update(coordinates_chamfer=coords["chamfer"], coordinates_points=coords["points"],
                   coordinates_bits_per_coordinate=coords["bits_per_coordinate"],
                   coordinates_over_squeeze3d=coords["chamfer"] / max(squeeze3d, 1e-12))
    lat = baselines.latent(run.model.generator, x, run.options.bits)
    if lat:
        out.update(latent_quantised_chamfer=lat["chamfer"], latent_bits_per_coordinate=lat["bits_per_coordinate"])
    dr = baselines.draco(x)
    if dr:
        out.update(draco_smallest_bytes=dr["smallest_bytes"], draco_bytes_at_8_bits=dr["bytes_at_8_bits"],
                   draco_chamfer_at_8_bits=dr["chamfer_at_8_bits"])
    return out


def diagnose(run: Run, threshold: float = 0.01) -> tuple[dict, list[str]]:
    if run.options.model in SQ:
        raise ValueError("a squeeze3d run's code is deterministic; diagnose its encoder or generator run")
    return encoder_diagnosis(run.model, clouds(run), None, threshold)


def sample(run: Run, n: int, seed: int = 0) -> dict:
    import torch

    if run.options.model in SQ:
        raise ValueError("a squeeze3d run draws nothing of its own; sample its generator run")
    return {"samples": run.model.sample(n, torch.Generator().manual_seed(seed)).reshape(n, -1).cpu()}


def report(run: Run):
    from .page import page

    return page(run, evaluate(run), clouds(run), decoded)


FAMILY = register(Family("pointcloud", MODELS, PointCloudOptions, train=train, load=load, evaluate=evaluate,
                         diagnose=diagnose, report=report, sample=sample, flags={"diagnose": ActivityFlags},
                         commands={"compress": COMPRESS, "decompress": DECOMPRESS},
                         facts=("encoder_model", "generator_model")))
