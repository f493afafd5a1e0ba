"""python -m fqsr_ref.export.run_port: run an exported model in onnxruntime as a port.

    python -m fqsr_ref.export --vectors vectors/srresnet_x2_4-4-8 --all-outputs --out m.onnx
    python -m fqsr_ref.export.run_port m.onnx vectors/srresnet_x2_4-4-8 port/
    python -m fqsr_ref.verify vectors/srresnet_x2_4-4-8 port/

For every stimulus S of the golden vector set, the model runs on the stored input
codes S/image.in (onnxruntime, CPU, one thread) and every graph output whose name
the set lists for S is written as PORT/S/<name>.bin (raw little-endian, the output's
own dtype: the verifier checks that it is the golden one). PORT is created if
needed; files of the same names are replaced.

Exit status: 0 written; 2 unusable input (one line "error: ..."); 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def run_port(model_path, golden_dir, port_dir) -> int:
    """Run model_path on the stimuli of golden_dir into port_dir; the number of files written."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ValueError('run_port needs onnxruntime: pip install -e ".[onnx]"') from None
    from ..vectors.stimuli import read_stimuli
    from ..vectors.store import read_manifest

    golden, port = Path(golden_dir).resolve(), Path(port_dir).resolve()
    if port == golden or golden in port.parents:
        raise ValueError(f"{port_dir} lies inside the golden set {golden_dir}; give a port directory outside it")
    listed = set(read_manifest(golden)["files"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(os.fspath(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:   # onnxruntime raises its own exception types for unreadable models
        raise ValueError(f"{model_path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
    inputs = [(i.name, i.type) for i in session.get_inputs()]
    if inputs != [("image.in", "tensor(uint8)")]:
        raise ValueError(f"{model_path}: expected one input image.in of uint8 codes, found {inputs}")
    names = [o.name for o in session.get_outputs()]
    written = 0
    for stim in read_stimuli(golden):
        out_dir = port / stim.name
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, value in zip(names, session.run(None, {"image.in": stim.codes})):
            rel = f"{stim.name}/{name}"
            if any(f"{rel}.{ext}" in listed for ext in ("bin", "npy", "hex")):
                (out_dir / f"{name}.bin").write_bytes(value.astype(value.dtype.newbyteorder("<")).tobytes())
                written += 1
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fqsr_ref.export.run_port", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="an exported .onnx file (python -m fqsr_ref.export)")
    p.add_argument("golden", help="the golden vector directory whose stimuli it runs")
    p.add_argument("port", help="directory to write PORT/<stimulus>/<tensor>.bin into")
    args = p.parse_args(argv)
    try:
        n = run_port(args.model, args.golden, args.port)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    print(f"wrote {n} tensors into {args.port}; check them with: python -m fqsr_ref.verify {args.golden} {args.port}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
