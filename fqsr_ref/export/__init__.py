"""Export the integer model as ONNX: bit-exact integer operators, or the QDQ and QONNX forms.

    python -m fqsr_ref.export --vectors vectors/srresnet_x2_4-4-8 --format onnx --out model.onnx
    python -m fqsr_ref.export --checkpoint runs/tiny/quant.npz --format qdq --out model.qdq.onnx

Forms (docs/SPEC.md 6.10):
  onnx   the integer model in standard ONNX operators (ConvInteger, integer Mul/Add/Mod/Div,
         Clip, Where, DepthToSpace): onnxruntime reproduces every golden tensor bit for bit
  qdq    float Conv between QuantizeLinear/DequantizeLinear (onnxruntime, TensorRT, OpenVINO):
         float32 scales and half-to-even rounding, so measured, not exact
  qonnx  QONNX Quant nodes (FINN, hls4ml, Brevitas's format): measured, not exact

integer_graph  the bit-exact graph
qdq_graph      the QDQ form
qonnx_graph    the QONNX form
common         opsets, value infos, the model wrapper, atomic writing
run_port       run an exported model in onnxruntime on a vector set's stimuli into a port
               directory that `python -m fqsr_ref.verify` checks

Needs the optional extra: pip install -e ".[onnx]" (onnx, onnxruntime, qonnx).
"""
FORMATS = ("onnx", "qdq", "qonnx")


def export_model(vm, fmt: str, opset: int, all_outputs: bool = False):
    """The ModelProto of a VectorModel (fqsr_ref.vectors.sources) in form fmt."""
    if fmt == "onnx":
        from .integer_graph import integer_graph
        return integer_graph(vm.model, opset, all_outputs)
    if fmt == "qdq":
        from .qdq_graph import qdq_graph
        return qdq_graph(vm, opset, all_outputs)
    if fmt == "qonnx":
        from .qonnx_graph import qonnx_graph
        return qonnx_graph(vm, opset, all_outputs)
    raise ValueError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
