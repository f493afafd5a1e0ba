"""Where a vector set's integer model comes from: VectorModel and its sources.

A quantized float model (params, a checkpoint, an untrained model calibrated by
one DAIA pass) converted by integer/model.py `convert`, or the integer model
stored in a vector directory; the committed sets under vectors/ and their paths.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..integer.model import AddOp, ConvOp, IntModel, RequantOp, ShuffleOp, Tensor, convert
from ..models.config import ModelConfig
from ..models.graph import code_scale
from ..quant import QuantSpec
from .encodings import sha256
from .store import find_array, read_manifest

REPO_VECTORS = Path(__file__).resolve().parents[2] / "vectors"
BUNDLED_BITS = ("4/4/8", "8/8/8")
CORNER_BITS = ("4/4/8", "16/16/16")   # the constructed sets of fqsr_ref/corner.py


class VectorModel(NamedTuple):
    """An integer model plus what the manifest needs that IntModel does not carry.

    weight_scales: conv name -> real value of one weight code (s_w).
    source: one line saying where the model came from (kept through regeneration).
    """
    model: IntModel
    weight_scales: dict
    source: str


def from_params(cfg: ModelConfig, params: dict, state: dict, source: str) -> VectorModel:
    """Convert a quantized float model to a VectorModel (integer/model.py `convert`)."""
    # IntModel does not keep s_w; convert derives it with code_scale, and so do we.
    model = convert(cfg, params, state)
    spec = QuantSpec(cfg.wt, True)
    scales = {op.name: code_scale(float(np.asarray(params[op.name + ".w.interval"])), spec)
              for op in model.ops if isinstance(op, ConvOp)}
    return VectorModel(model, scales, source)


def from_checkpoint(path) -> VectorModel:
    from ..checkpoint import load_checkpoint
    ckpt = load_checkpoint(path)
    digest = sha256(Path(path).read_bytes())
    return from_params(ckpt.config, ckpt.params, ckpt.state,
                       f"checkpoint {Path(path).name} (sha256 {digest})")


def calibrated_params(cfg: ModelConfig, rng: np.random.Generator, batch: np.ndarray):
    """(params, state) of an untrained quantized model of cfg whose intervals come
    from one DAIA pass (Eq. 4) over batch: (N, 3, H, W) float64 images in [0, 1].

    For tests and to seed the bundled sets before a trained checkpoint exists. It
    runs float convolutions, so it is not bit-reproducible across BLAS builds (the
    stored sets are).
    """
    from ..models import Pass, init_model, quantize_model, sr_forward
    fp = dataclasses.replace(cfg, wt=32, fm=32, sc=32)
    params, state = init_model(fp, rng)
    params, state = quantize_model(params, state, cfg)
    ps = Pass(params, state, cfg, training=True, warmup=1, keep_cache=False)
    sr_forward(ps, cfg, batch)
    params = {**params, **{k: np.asarray(v) for k, v in ps.interval_init.items()}}
    return params, {**state, **ps.new_state}


def calibrated_model(cfg: ModelConfig, rng: np.random.Generator, batch: np.ndarray) -> VectorModel:
    """The integer model of `calibrated_params`."""
    return from_params(cfg, *calibrated_params(cfg, rng, batch),
                       f"untrained {cfg.arch} x{cfg.scale} {cfg.bits}, "
                       f"intervals from one DAIA pass over {batch.shape[0]} images")


def untrained_model(bits: str = "4/4/8", seed: int = 1) -> VectorModel:
    """The tiny SRResNet x2 (16 channels, 2 blocks) of `bits`, untrained (init seed
    `seed`), intervals from one DAIA pass over 4 procedural 32x32 images (seed 0).
    This is how the bundled sets were first made (`--untrained`)."""
    from ..data.synthetic import procedural_image
    from ..models import preset
    rng = np.random.default_rng(0)
    batch = np.stack([procedural_image(rng, (32, 32)) for _ in range(4)]).transpose(0, 3, 1, 2) / 255.0
    cfg = preset("srresnet", 2, bits, blocks=2, channels=16)
    vm = calibrated_model(cfg, np.random.default_rng(seed), batch)
    return vm._replace(source=f"untrained SRResNet x2, 16 channels, 2 blocks, {bits} (init seed {seed}); "
                              "intervals from one DAIA pass (Eq. 4) over 4 procedural 32x32 images (seed 0)")


def corner_vector_model(bits: str) -> VectorModel:
    """The constructed corner model of `bits` (fqsr_ref/corner.py, `--corner`)."""
    from ..corner import SEED, corner_model
    return from_params(*corner_model(bits),
                       f"constructed corner model {bits} (fqsr_ref/corner.py, seed {SEED})")


def read_model(vec_dir) -> VectorModel:
    """The integer model stored in a vector directory (checked against its sha256 sums)."""
    root = Path(vec_dir)
    m = read_manifest(root)
    t = m["tensors"]
    try:
        cfg = ModelConfig(**m["model"]["config"])
        tensors = {name: Tensor(name, e["bits"], e["signed"], e["scale"], e["qmin"], e["qmax"])
                   for name, e in t.items() if e["kind"] == "codes"}
        ops, scales = [], {}
        for e in m["ops"]:
            kind, name, fields = e["kind"], e["name"], (e["kind"], e["name"], e["input"], e["output"])
            if kind == "conv":
                scales[name] = t[e["weight"]]["scale"]
                ops.append(ConvOp(*fields, weight=find_array(root, m, f"weights/{e['weight']}"),
                                  w_bits=t[e["weight"]]["bits"],
                                  bias=find_array(root, m, f"weights/{e['bias']}"),
                                  multiplier=e["multiplier"], shift=e["shift"],
                                  neg_multiplier=e["neg_multiplier"], neg_shift=e["neg_shift"],
                                  neg_sign=e["neg_sign"], acc_bound=e["acc_bound"],
                                  acc_dtype=e["acc_dtype"],
                                  pad_value=None if e.get("pad_value") is None else
                                  tuple(int(v) for v in e["pad_value"])))
            elif kind == "requant":
                ops.append(RequantOp(*fields, multiplier=e["multiplier"], shift=e["shift"]))
            elif kind == "add":
                ops.append(AddOp(kind, name, e["input"], e["branch"], e["output"],
                                 branch_relu=e["branch_relu"], multiplier=e["multiplier"],
                                 branch_multiplier=e["branch_multiplier"], shift=e["shift"]))
            elif kind == "shuffle":
                ops.append(ShuffleOp(*fields, factor=e["factor"]))
            else:
                raise ValueError(f"unknown op kind {kind!r}")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"vectors: {root / 'manifest.json'}: incomplete model description ({exc!r})") from None
    return VectorModel(IntModel(cfg, tensors, ops), scales, m["model"]["source"])


def bundled_dir(bits: str = "4/4/8") -> Path:
    return REPO_VECTORS / f"srresnet_x2_{bits.replace('/', '-')}"


def corner_dir(bits: str) -> Path:
    return REPO_VECTORS / f"corner_x2_{bits.replace('/', '-')}"


def committed_dirs() -> list:
    """Every committed set: the trained ones and the constructed corner ones."""
    return [bundled_dir(b) for b in BUNDLED_BITS] + [corner_dir(b) for b in CORNER_BITS]


def bundled_model(bits: str = "4/4/8") -> VectorModel:
    """The tiny SRResNet x2 (16 channels, 2 blocks) stored in vectors/ (source checkout)."""
    if bits not in BUNDLED_BITS:
        raise ValueError(f"vectors: no bundled model for bits {bits!r}; bundled: {BUNDLED_BITS}")
    return read_model(bundled_dir(bits))
