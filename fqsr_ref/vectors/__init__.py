"""Golden test vectors: every tensor of an integer-only model, written for ports.

    python -m fqsr_ref.vectors --out DIR [--checkpoint CKPT | --model VECDIR | --untrained | --corner BITS]
    python -m fqsr_ref.vectors --regenerate VECDIR [--out DIR]
    python -m fqsr_ref.vectors --check VECDIR

A vector directory (format in vectors/README.md, rules in docs/SPEC.md) holds:
    manifest.json                 schema, model config, tensors, ops, stimuli, sha256 per file
    model.txt                     the same graph as plain lines, for ports without a JSON parser
    weights/<conv>.w.*, .b.*      weight codes (OIHW) and int32 biases
    <stimulus>/<tensor>.*         the codes of every tensor, NCHW
    <stimulus>/<conv>.acc.*       accumulators before requantization
    <stimulus>/<conv>.plane.*     one output element's im2col row, weight column and
                                  bit-plane popcounts (Eq. 2)
with every array as .npy, raw little-endian .bin and .hex for $readmemh.

A vector directory is self-contained: the integer model (weight codes, biases,
multipliers, shifts) and the input codes can be read back from it, and
`regenerate` rebuilds every file from them with integer arithmetic only. That
is why the committed vectors/ sets regenerate byte for byte on any machine,
whatever float BLAS the machine has: no float training or calibration runs.

encodings  .npy / .bin / .hex bytes, little-endian, the storage dtype, sha256
store      a directory on disk: atomic writing, path safety, reading manifest and arrays back
stimuli    the natural and synthetic stimuli, and those stored in a set
sources    VectorModel: from params, a checkpoint, untrained, corner or a stored set; the committed sets
record     per op: values before the clamp, rounding ties, bit-plane partials of one element
manifest   the manifest's tensor and op entries, its canonical JSON, model.txt
build      running the model on each stimulus into every file of a set; regenerate
cli        the command line (python -m fqsr_ref.vectors)

Imports point one way: encodings <- store <- stimuli, sources <- manifest <- build <- cli,
and record (integer arithmetic only) <- build.
"""
from .build import Builder, build_vectors, check_names, plane_vectors, regenerate, stimulus_vectors
from .cli import build_parser, main, natural_image, parse_formats, run
from .encodings import FORMATS, encode, hex_bytes, little_endian, npy_bytes, sha256, storage_dtype
from .manifest import manifest_bytes, model_text, op_entry, ops_of, tensor_entries
from .record import (coverage, im2col_row, plane_element, rebuild_accumulator, rounding_operands,
                     unclamped)
from .sources import (BUNDLED_BITS, CORNER_BITS, REPO_VECTORS, VectorModel, bundled_dir, bundled_model,
                      calibrated_model, calibrated_params, committed_dirs, corner_dir, corner_vector_model,
                      from_checkpoint, from_params, read_model, untrained_model)
from .stimuli import (DEFAULT_CROP_ORIGIN, DEFAULT_PHOTO, NOISE_SEED, STIMULI, STIMULUS_TEXT, Stimulus,
                      default_photo, default_stimuli, make_stimulus, read_stimuli)
from .store import (NAME_RE, SCHEMA_VERSION, compare_tree, find_array, load_array, read_manifest,
                    safe_path, write_tree)

__all__ = [
    "FORMATS", "storage_dtype", "little_endian", "npy_bytes", "hex_bytes", "encode", "sha256",
    "SCHEMA_VERSION", "NAME_RE", "write_tree", "compare_tree", "safe_path", "read_manifest",
    "load_array", "find_array",
    "DEFAULT_PHOTO", "DEFAULT_CROP_ORIGIN", "NOISE_SEED", "STIMULI", "STIMULUS_TEXT", "Stimulus",
    "default_photo", "make_stimulus", "default_stimuli", "read_stimuli",
    "REPO_VECTORS", "BUNDLED_BITS", "CORNER_BITS", "VectorModel", "from_params", "from_checkpoint",
    "calibrated_params", "calibrated_model", "untrained_model", "corner_vector_model", "read_model",
    "bundled_dir", "corner_dir", "committed_dirs", "bundled_model",
    "unclamped", "rounding_operands", "coverage", "rebuild_accumulator", "plane_element", "im2col_row",
    "ops_of", "tensor_entries", "op_entry", "model_text", "manifest_bytes",
    "Builder", "check_names", "stimulus_vectors", "plane_vectors", "build_vectors", "regenerate",
    "build_parser", "parse_formats", "natural_image", "run", "main",
]
