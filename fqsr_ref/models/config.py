"""Model configuration: architecture presets and the wt/fm/sc bit configuration.

A model is data: a ModelConfig (this module), a dict of parameters and a dict of
state (batch-norm running statistics, DAIA records). The config is stored as JSON
in every checkpoint, so every field is a plain int, float, str or bool.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

ARCHS = ("srresnet", "edsr", "fqsr_lite", "srgan")
SCALES = (2, 3, 4)
VALID_BITS = set(range(1, 17)) | {32}

# DIV2K RGB mean (EDSR's MeanShift), on the [0, 1] pixel range.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

BLOCK_ACTS = ("relu", "prelu")
# Far above any published SR network (EDSR: 32 blocks of 256 channels), far below what
# would overflow a size computation; what a machine can hold is checked against memory.
MAX_BLOCKS, MAX_CHANNELS = 4096, 65536
HEAD_PADS = ("zero", "mean")
BN_FOLDS = ("weights", "requant")

# Fields added after checkpoints and vector sets were written: stored (JSON, manifest)
# only when they differ from these defaults, so older files keep their bytes and load.
OPTIONAL_FIELDS = {"block_act": "relu", "head_pad": "zero", "bn_fold": "weights"}


# The Python types a field may hold, by its annotation (a float field takes an int too).
FIELD_TYPES = {"str": str, "int": int, "bool": bool, "float": (int, float)}
TYPE_TEXT = {"str": "a string", "int": "an integer", "bool": "true or false", "float": "a number"}


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a model's graph.

    arch: srresnet | edsr | fqsr_lite | srgan (srgan = the SRResNet generator).
    wt/fm/sc: bits of conv weights, conv inputs/outputs (feature maps), skip
    tensors; 32 means full precision. grid: signed grid, "narrow" or "dorefa".
    branch_relu: Eq. 7 (y = Q(x) + ReLU(Q(z))) when True, the plain residual add
    (y = Q(x) + Q(z), as the authors' released code) when False. Quantized models
    only: the full-precision model is the published network, always a plain add.
    requant_image: the head conv reads the image requantized to fm bits (the strict
    reading of "every conv input at fm bits"); by default it reads the 8-bit image
    codes as they are, an 8 x wt-bit conv (the authors' code leaves the image
    unquantized; 16 grey levels at fm = 4 remove what SR must recover).
    pixel_range: the float graph works on pixels in 0..pixel_range, the authors'
    rgb_range = 255, so that intervals, biases and SQCL weights (alpha) have the
    units of the paper's runs; images enter and leave the model in [0, 1].
    block_act: EDSR's activation inside each residual block, "relu" (EDSR-baseline)
    or "prelu" (one shared slope: the FQSR authors' EDSR with --keyword PReLU).
    SRResNet's blocks always have PReLU.
    head_pad: what EDSR's head conv reads outside the image, "zero" (code 0, the mean
    folded into the bias: the convention of the models trained here) or "mean" (the
    image code nearest the mean, round_half_up(255 m): PyTorch's MeanShift before the
    zero-padded head, up to half a code; imports of PyTorch EDSRs). SPEC 5.1.
    bn_fold: where a quantized model puts BN's per-channel scale gamma / sigma (Eq. 6):
    "weights" folds it into the conv weights, which are then quantized with one interval
    per tensor; "requant" quantizes the weights as they are (one interval per tensor, as
    the authors' code does) and applies the scale per output channel after the conv, in
    the integer model as one requantization multiplier per channel (not converted). SPEC 3.6.
    """
    arch: str = "srresnet"
    scale: int = 2
    blocks: int = 16
    channels: int = 64
    wt: int = 32
    fm: int = 32
    sc: int = 32
    grid: str = "narrow"
    branch_relu: bool = False
    requant_image: bool = False
    pixel_range: float = 255.0
    res_scale: float = 1.0
    bn_eps: float = 1e-5
    block_act: str = "relu"
    head_pad: str = "zero"
    bn_fold: str = "weights"

    def __post_init__(self):
        for field in dataclasses.fields(self):   # JSON from a file: types first, then values
            value, kind = getattr(self, field.name), FIELD_TYPES[field.type]
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"model config: {field.name} is {value!r}, expected {TYPE_TEXT[field.type]}")
        if self.arch not in ARCHS:
            raise ValueError(f"model config: unknown arch {self.arch!r}; expected one of {ARCHS}")
        if self.scale not in SCALES:
            raise ValueError(f"model config: scale {self.scale} not supported; expected one of {SCALES}")
        for field in ("wt", "fm", "sc"):
            bits = getattr(self, field)
            if bits not in VALID_BITS:
                raise ValueError(f"model config: {field} bits {bits} not in 1..16 or 32")
        if self.grid not in ("narrow", "dorefa"):
            raise ValueError(f"model config: grid {self.grid!r}; expected 'narrow' or 'dorefa'")
        if self.grid == "narrow" and 1 in (self.wt, self.fm, self.sc):
            raise ValueError("model config: 1-bit signed data needs grid='dorefa' (the narrow grid needs >= 2 bits)")
        if not self.pixel_range > 0:
            raise ValueError(f"model config: pixel_range {self.pixel_range} must be positive")
        if self.block_act not in BLOCK_ACTS:
            raise ValueError(f"model config: block_act {self.block_act!r}; expected one of {BLOCK_ACTS}")
        if self.block_act != "relu" and not self.is_edsr:
            raise ValueError(f"model config: block_act {self.block_act!r} is EDSR's option "
                             f"({self.arch} blocks always have PReLU)")
        if self.head_pad not in HEAD_PADS:
            raise ValueError(f"model config: head_pad {self.head_pad!r}; expected one of {HEAD_PADS}")
        if self.head_pad != "zero" and not self.is_edsr:
            raise ValueError(f"model config: head_pad {self.head_pad!r} is EDSR's option ({self.arch} has no mean shift)")
        if self.head_pad != "zero" and self.requant_image:
            raise ValueError("model config: head_pad 'mean' pads the 8-bit image codes; "
                             "requant_image (a requantized head input) is not supported with it")
        if self.bn_fold not in BN_FOLDS:
            raise ValueError(f"model config: bn_fold {self.bn_fold!r}; expected one of {BN_FOLDS}")
        if self.bn_fold != "weights" and self.is_edsr:
            raise ValueError(f"model config: bn_fold {self.bn_fold!r} needs batch norm (EDSR has none)")
        if not (0 <= self.blocks <= MAX_BLOCKS and 1 <= self.channels <= MAX_CHANNELS):
            raise ValueError(f"model config: blocks {self.blocks} and channels {self.channels} must be in "
                             f"0..{MAX_BLOCKS} and 1..{MAX_CHANNELS}")

    # Architecture family: EDSR-baseline, or SRResNet (srresnet, fqsr_lite, srgan).
    @property
    def is_edsr(self) -> bool:
        return self.arch == "edsr"

    @property
    def quantized(self) -> bool:
        return (self.wt, self.fm, self.sc) != (32, 32, 32)

    @property
    def add_relu(self) -> bool:
        """Eq. 7's ReLU on the residual branch: quantized models with branch_relu."""
        return self.branch_relu and self.quantized

    @property
    def bits(self) -> str:
        return f"{self.wt}/{self.fm}/{self.sc}"

    @property
    def head_kernel(self) -> int:
        return 3 if self.is_edsr else 9

    @property
    def upsample_factors(self) -> tuple:
        """Pixel-shuffle factors of the upsampler stages (x4 is two x2 stages)."""
        return (2, 2) if self.scale == 4 else (self.scale,)

    def with_bits(self, bits: str) -> "ModelConfig":
        wt, fm, sc = parse_bits(bits)
        return dataclasses.replace(self, wt=wt, fm=fm, sc=sc)

    def as_dict(self) -> dict:
        """The fields as stored: an optional field (OPTIONAL_FIELDS) only when not its default."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in OPTIONAL_FIELDS or v != OPTIONAL_FIELDS[k]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "ModelConfig":
        try:
            fields = json.loads(text)
            return ModelConfig(**fields)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"model config: cannot read {text[:80]!r}: {exc}") from None


def parse_bits(text: str) -> tuple:
    """'4/4/8' -> (4, 4, 8). A ValueError names the bad part."""
    parts = str(text).split("/")
    if len(parts) != 3:
        raise ValueError(f"bits {text!r}: expected wt/fm/sc, e.g. 4/4/8")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"bits {text!r}: every part must be an integer") from None
    for name, bits in zip(("wt", "fm", "sc"), values):
        if bits not in VALID_BITS:
            raise ValueError(f"bits {text!r}: {name} = {bits} not in 1..16 or 32")
    return values


def preset(arch: str, scale: int = 2, bits: str = "32/32/32", blocks: int | None = None,
           channels: int | None = None, **kw) -> ModelConfig:
    """The paper's architectures with their default sizes, overridable."""
    default_blocks = {"srresnet": 16, "srgan": 16, "edsr": 16, "fqsr_lite": 10}
    if arch not in default_blocks:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    wt, fm, sc = parse_bits(bits)
    return ModelConfig(arch=arch, scale=scale, wt=wt, fm=fm, sc=sc,
                       blocks=default_blocks[arch] if blocks is None else blocks,
                       channels=64 if channels is None else channels, **kw)
