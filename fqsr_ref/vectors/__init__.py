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
hdl        the hardware kit: .mem memories at the code's width (element, NHWC/OHWI words,
           bit-plane words) and per-op .svh / .h parameter headers
stream     stream-order vectors of a stored set (--stream): AXI-Stream beats, skip FIFO depths, strips
cli        the command line (python -m fqsr_ref.vectors)

Imports point one way: encodings <- store <- stimuli, sources <- manifest <- build <- cli,
and record (integer arithmetic only) <- build.
"""
import importlib

# Lazy exports (PEP 562): `import fqsr_ref.vectors.store` (the verifier) must not pull in
# build and the integer engines (Numba, SciPy), so each name loads its module on first use.
_EXPORTS = {
    "build": ("Builder", "build_vectors", "check_names", "plane_vectors", "regenerate", "stimulus_vectors",
              "estimate_bytes"),
    "cli": ("build_parser", "main", "natural_image", "parse_formats", "run"),
    "encodings": ("FORMATS", "encode", "hex_bytes", "little_endian", "npy_bytes", "sha256", "storage_dtype"),
    "hdl": ("HDL_FORMAT", "Kit", "mem_text", "packed_words", "acc_bits", "op_params"),
    "stream": ("STREAM_INDEX", "StreamBuilder", "beat_words", "branch_need", "skip_fifo_depth", "stream_files",
               "strips"),
    "manifest": ("manifest_bytes", "model_text", "op_entry", "ops_of", "tensor_entries"),
    "record": ("coverage", "im2col_row", "plane_element", "rebuild_accumulator", "rounding_operands",
               "unclamped"),
    "sources": ("BUNDLED_BITS", "CORNER_BITS", "REPO_VECTORS", "VectorModel", "bundled_dir", "bundled_model",
                "calibrated_model", "calibrated_params", "committed_dirs", "corner_dir", "corner_vector_model",
                "from_checkpoint", "from_params", "read_model", "untrained_model"),
    "stimuli": ("AWKWARD", "DEFAULT_CROP_ORIGIN", "DEFAULT_PHOTO", "NOISE_SEED", "STIMULI", "STIMULUS_TEXT",
                "Stimulus", "awkward_stimuli", "default_photo", "default_stimuli", "make_stimulus",
                "read_stimuli"),
    "store": ("NAME_RE", "SCHEMA_VERSION", "compare_tree", "find_array", "load_array", "read_manifest",
              "safe_path", "write_tree"),
}
_MODULE_OF = {name: mod for mod, names in _EXPORTS.items() for name in names}


def __getattr__(name):
    mod = _MODULE_OF.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_MODULE_OF))


__all__ = [name for names in _EXPORTS.values() for name in names]
