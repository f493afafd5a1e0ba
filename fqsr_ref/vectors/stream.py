"""Stream-order vectors for streaming (dataflow) accelerators, made from a stored vector set
(`python -m fqsr_ref.vectors --stream VECDIR --pe P --simd S [--tile-rows T] --out DIR`;
layout in vectors/README.md, "Stream-order vectors").

Every tensor of every stimulus as AXI-Stream beats in raster order (n, y, x), each pixel's
channels folded to F lanes a beat (F = SIMD for what a conv reads, PE for what an op writes),
with TUSER (first beat of a frame) and TLAST (last beat of a line) in the word; the depth each
residual skip FIFO needs in a line-buffered dataflow (skip_fifo_depth); the strips of SPEC 6.9
for a tile height, each input with its halo rows and its own output rows, which stitch back to
the whole image.out; per conv the K x K x CIN window its line buffers present at chosen
output positions (corners, border middles, the interior pixel); per op a `.svh` of its parameters and stream files for a testbench;
every conv's weights and constants as ROM images (rom.py).
Integer arithmetic only: the tensors are read from the set, the strips run with run_ops.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..integer.model import AddOp, ConvOp, ShuffleOp
from ..integer.tiling import receptive_radius
from .encodings import sha256
from .hdl import acc_bits, mem_text, op_params, packed_words, svh_text
from .manifest import ops_of
from .rom import rom_images
from .sources import read_model
from .store import find_array, read_manifest

STREAM_INDEX = "stream.json"
STREAM_VERSION = 1


def beat_words(codes: np.ndarray, bits: int, signed: bool, lanes: int) -> list:
    """(N, C, H, W) codes -> the stream's words as Python ints: beats in C order over
    (n, y, x, g), g the channel group; lane l of beat g holds channel g*lanes + l in bits
    [l bits, (l+1) bits) (0 past C); bit lanes*bits is TUSER (y = x = g = 0), bit lanes*bits + 1
    TLAST (x = W - 1 and the pixel's last group)."""
    n, c, h, w = codes.shape
    groups = -(-c // lanes)
    padded = np.zeros((n, groups * lanes, h, w), np.int64)
    padded[:, :c] = codes
    rows = padded.transpose(0, 2, 3, 1).reshape(n * h * w * groups, lanes)
    words = packed_words(rows, bits, signed)
    y, x, g = np.meshgrid(np.arange(h), np.arange(w), np.arange(groups), indexing="ij")
    user = np.tile(((y == 0) & (x == 0) & (g == 0)).ravel(), n)
    last = np.tile(((x == w - 1) & (g == groups - 1)).ravel(), n)
    top = lanes * bits
    return [wd | (int(u) << top) | (int(t) << (top + 1)) for wd, u, t in zip(words, user, last)]


def conv_need(index: np.ndarray, h: int, w: int, k: int) -> np.ndarray:
    """For raster output pixels `index` of a K x K 'same' conv, the raster index of the last
    input pixel each needs: (min(y + K//2, H-1), min(x + K//2, W-1))."""
    p = k // 2
    y, x = index // w, index % w
    return np.minimum(y + p, h - 1) * w + np.minimum(x + p, w - 1)


def branch_need(model, skip: str, branch: str, h: int, w: int) -> np.ndarray:
    """For each raster pixel p of tensor `branch`, the raster index of the last pixel of tensor
    `skip` it needs: through a K x K conv conv_need, a requant the same pixel, an add the later
    of its two operands' needs (same H, W throughout: a shuffle between them is refused)."""
    by_output = {op.output: op for op in model.ops}
    memo = {}

    def need(t):
        if t == skip:
            return np.arange(h * w)
        if t not in memo:
            op = by_output.get(t)
            if op is None or isinstance(op, ShuffleOp):
                raise ValueError(f"vectors: the branch {branch} of an add does not reach its skip {skip} "
                                 "without a pixel shuffle")
            if isinstance(op, ConvOp):
                memo[t] = need(op.input)[conv_need(np.arange(h * w), h, w, op.weight.shape[2])]
            elif isinstance(op, AddOp):
                memo[t] = np.maximum(need(op.input), need(op.branch))
            else:
                memo[t] = need(op.input)
        return memo[t]

    return need(branch)


def skip_fifo_depth(model, add: AddOp, h: int, w: int) -> int:
    """Pixels the skip FIFO of `add` must hold so that a line-buffered dataflow never stalls
    for want of room: the fork sends each pixel of the skip tensor to the FIFO and to the
    branch at once; a K x K conv emits output (y, x) once input (min(y+K//2, H-1),
    min(x+K//2, W-1)) has arrived; a requant emits at once; an add once both operands have
    arrived; the add pops a skip pixel when the branch's pixel arrives. When the fork pushes
    pixel q the FIFO holds pixels c..q, c = the branch pixels whose need is <= q - 1; the
    depth is the largest q - c + 1 (interior: sum over the longest branch path's convs of
    (K//2)(W + 1), plus 1)."""
    need = branch_need(model, add.input, add.branch, h, w)    # non-decreasing in p
    q = np.arange(h * w)
    available = np.searchsorted(need, q - 1, side="right")
    return int((q - available + 1).max())


def window_positions(h: int, w: int) -> list:
    """The output positions whose windows are written: ((y, x), labels), raster order, each
    position once (a small image merges labels): the four corners, the middle pixel of each
    border row / column, the interior pixel (H//2, W//2)."""
    named = [("top-left", 0, 0), ("top", 0, w // 2), ("top-right", 0, w - 1),
             ("left", h // 2, 0), ("interior", h // 2, w // 2), ("right", h // 2, w - 1),
             ("bottom-left", h - 1, 0), ("bottom", h - 1, w // 2), ("bottom-right", h - 1, w - 1)]
    out = {}
    for label, y, x in named:
        out.setdefault((y, x), []).append(label)
    return sorted(out.items())


def window_codes(x: np.ndarray, y: int, xx: int, k: int, pad_value=None) -> np.ndarray:
    """(K, K, C) input codes a K x K 'same' window centred on output (y, xx) of image x (C, H, W)
    sees: tap (ky, kx) = x[:, y + ky - K//2, xx + kx - K//2], outside the image 0 (or the
    conv's per-channel pad code)."""
    c, h, w = x.shape
    p = k // 2
    out = np.zeros((k, k, c), np.int64)
    if pad_value is not None:
        out[:] = np.asarray(pad_value, np.int64)
    for ky in range(k):
        for kx in range(k):
            iy, ix = y + ky - p, xx + kx - p
            if 0 <= iy < h and 0 <= ix < w:
                out[ky, kx] = x[:, iy, ix]
    return out


def strips(height: int, tile_rows: int, halo: int) -> list:
    """SPEC 6.9 strips of tile_rows LR rows: (y0, y1, iy0, iy1), input rows [iy0, iy1)."""
    return [(y0, min(height, y0 + tile_rows), max(0, y0 - halo), min(height, y0 + tile_rows + halo))
            for y0 in range(0, height, tile_rows)]


class StreamBuilder:
    """The files of a stream directory: relative path -> bytes, and the index (stream.json)."""

    def __init__(self, vec_dir, pe: int, simd: int, tile_rows: int | None = None):
        for name, v in (("--pe", pe), ("--simd", simd)) + ((("--tile-rows", tile_rows),) if tile_rows else ()):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} {v}: must be an integer >= 1")
        self.root = Path(vec_dir)
        self.manifest = read_manifest(self.root)
        self.vm = read_model(self.root)
        self.model = self.vm.model
        self.pe, self.simd, self.tile_rows = pe, simd, tile_rows
        self.files, self.index = {}, {}

    def _mem(self, path: str, codes: np.ndarray, bits: int, signed: bool, lanes: int, tensor: str) -> dict:
        words = beat_words(codes, bits, signed, lanes)
        data = mem_text(words, lanes * bits + 2)
        self.files[path] = data
        return dict(path=path, tensor=tensor, lanes=lanes, bits=bits, signed=bool(signed),
                    word_bits=lanes * bits + 2, beats=len(words), shape=[int(s) for s in codes.shape],
                    sha256=sha256(data))

    def tensor_streams(self, stim: str) -> dict:
        """Every code tensor at SIMD and PE lanes, every conv's accumulators at PE lanes."""
        streams = {}
        lanes = sorted({self.pe, self.simd})
        for name, t in sorted(self.model.tensors.items()):
            codes = find_array(self.root, self.manifest, f"{stim}/{name}").astype(np.int64)
            for f in lanes:
                streams[f"{name}.f{f}"] = self._mem(f"{stim}/{name}.f{f}.mem", codes, t.bits, t.signed, f, name)
        for op in ops_of(self.model, ConvOp):
            acc = find_array(self.root, self.manifest, f"{stim}/{op.name}.acc").astype(np.int64)
            streams[f"{op.name}.acc.f{self.pe}"] = self._mem(f"{stim}/{op.name}.acc.f{self.pe}.mem", acc,
                                                             acc_bits(op.acc_bound), True, self.pe,
                                                             op.name + ".acc")
        return streams

    def fifo_depths(self, stim: str) -> dict:
        shapes = self.manifest["stimuli"][stim]["shapes"]
        out = {}
        for op in ops_of(self.model, AddOp):
            _, c, h, w = shapes[op.input]
            pixels = skip_fifo_depth(self.model, op, h, w)
            out[op.name] = dict(skip=op.input, branch=op.branch, pixels=pixels,
                                beats=pixels * -(-c // self.pe), lanes=self.pe)
        return out

    def op_headers(self, stim: str, streams: dict, fifos: dict) -> None:
        shapes = {k: tuple(v) for k, v in self.manifest["stimuli"][stim]["shapes"].items()}
        cfg = self.model.config
        for op in self.model.ops:
            p = op_params(self.model, op, stim, shapes, {})
            in_lanes = self.simd if isinstance(op, ConvOp) else self.pe
            src = streams[f"{op.input}.f{in_lanes}"]
            dst = streams[f"{op.output}.f{self.pe}"]
            p += [("SIMD", self.simd), ("PE", self.pe), ("IN_LANES", in_lanes), ("OUT_LANES", self.pe),
                  ("IN_WORD_BITS", src["word_bits"]), ("IN_BEATS", src["beats"]),
                  ("OUT_WORD_BITS", dst["word_bits"]), ("OUT_BEATS", dst["beats"])]
            if isinstance(op, AddOp):
                br = streams[f"{op.branch}.f{self.pe}"]
                p += [("BR_WORD_BITS", br["word_bits"]), ("BR_BEATS", br["beats"]),
                      ("SKIP_FIFO_PIXELS", fifos[op.name]["pixels"]), ("SKIP_FIFO_BEATS", fifos[op.name]["beats"])]
            if isinstance(op, ConvOp):
                acc = streams[f"{op.name}.acc.f{self.pe}"]
                p += [("ACC_WORD_BITS", acc["word_bits"]), ("ACC_BEATS", acc["beats"]),
                      ("ACC_STREAM_MEM", acc["path"]), ("W_ROM_GROUPS", -(-op.weight.shape[1] // self.simd)),
                      ("W_ROM_MEM", f"weights/{op.name}.w.f{self.simd}.mem"),
                      ("CONST_ROM_MEM", f"weights/{op.name}.const.mem")]
            p += [("IN_STREAM_MEM", src["path"]), ("OUT_STREAM_MEM", dst["path"])]
            if isinstance(op, AddOp):
                p += [("BR_STREAM_MEM", streams[f"{op.branch}.f{self.pe}"]["path"])]
            path = f"{stim}/{op.name}.stream.svh"
            self.files[path] = svh_text(f"{op.kind} {op.name}, stimulus {stim}, stream SIMD {self.simd} PE "
                                        f"{self.pe}; {cfg.arch} x{cfg.scale} {cfg.bits}",
                                        [(k, int(v) if not isinstance(v, str) else v) for k, v in p])

    def windows(self, stim: str) -> dict:
        """Per conv: the K x K x CIN window at window_positions of every frame, SIMD lanes a word
        (no marker bits), words in (ky, kx, g) order."""
        out = {}
        for op in ops_of(self.model, ConvOp):
            t = self.model.tensors[op.input]
            x = find_array(self.root, self.manifest, f"{stim}/{op.input}").astype(np.int64)
            n, c, h, w = x.shape
            k = op.weight.shape[2]
            groups = -(-c // self.simd)
            entries = []
            for b in range(n):
                for (y, xx), where in window_positions(h, w):
                    win = np.zeros((k, k, groups * self.simd), np.int64)
                    win[:, :, :c] = window_codes(x[b], y, xx, k, op.pad_value)
                    words = packed_words(win.reshape(k * k * groups, self.simd), t.bits, t.signed)
                    path = f"{stim}/windows/{op.name}/n{b}_y{y}_x{xx}.f{self.simd}.mem"
                    data = mem_text(words, self.simd * t.bits)
                    self.files[path] = data
                    entries.append(dict(n=b, y=y, x=xx, where=where, path=path, sha256=sha256(data)))
            out[op.name] = dict(input=op.input, k=k, cin=c, lanes=self.simd, groups=groups, bits=t.bits,
                                signed=bool(t.signed), word_bits=self.simd * t.bits, beats=k * k * groups,
                                pad="zero" if op.pad_value is None else "pad_value", positions=entries)
        return out

    def tiles(self, stim: str) -> list:
        """The strips of tile_rows LR rows: input with halo at SIMD lanes, own output rows at PE."""
        from ..integer.run import run_ops
        image = find_array(self.root, self.manifest, f"{stim}/image.in")
        h, s, halo = image.shape[2], self.model.config.scale, receptive_radius(self.model)
        t_in, t_out = self.model.tensors["image.in"], self.model.tensors["image.out"]
        out = []
        for k, (y0, y1, iy0, iy1) in enumerate(strips(h, self.tile_rows, halo)):
            crop = np.ascontiguousarray(image[:, :, iy0:iy1])
            sr = run_ops(self.model, crop, "plain")["image.out"][:, :, s * (y0 - iy0):s * (y1 - iy0)]
            stem = f"{stim}/tiles/rows{self.tile_rows}/strip{k}"
            out.append(dict(rows=[y0, y1], input_rows=[iy0, iy1], output_rows=[s * y0, s * y1],
                            input=self._mem(f"{stem}.image.in.f{self.simd}.mem", crop.astype(np.int64),
                                            t_in.bits, t_in.signed, self.simd, "image.in"),
                            output=self._mem(f"{stem}.image.out.f{self.pe}.mem", sr.astype(np.int64),
                                             t_out.bits, t_out.signed, self.pe, "image.out")))
        return out

    def build(self, stimuli=None) -> dict:
        names = sorted(self.manifest["stimuli"]) if not stimuli else list(stimuli)
        for name in names:
            if name not in self.manifest["stimuli"]:
                raise ValueError(f"--stimulus {name}: not a stimulus of {self.root} "
                                 f"({', '.join(sorted(self.manifest['stimuli']))})")
        per = {}
        for stim in names:
            streams = self.tensor_streams(stim)
            fifos = self.fifo_depths(stim)
            self.op_headers(stim, streams, fifos)
            entry = dict(streams=streams, skip_fifos=fifos, windows=self.windows(stim))
            if self.tile_rows:
                entry["tiles"] = dict(tile_rows=self.tile_rows, halo=receptive_radius(self.model),
                                      strips=self.tiles(stim))
            per[stim] = entry
        rom, rom_index = rom_images(self.model, self.simd)
        self.files.update(rom)
        cfg = self.model.config
        index = dict(weights=rom_index, stream_version=STREAM_VERSION, generator="fqsr_ref.vectors --stream",
                     source=str(self.root), model=f"{cfg.arch} x{cfg.scale} {cfg.bits}",
                     pe=self.pe, simd=self.simd,
                     word="lane l of a beat in bits [l BITS, (l+1) BITS); TUSER bit LANES*BITS; "
                          "TLAST bit LANES*BITS + 1",
                     ops=[dict(name=op.name, kind=op.kind, input=op.input, output=op.output,
                               **({"branch": op.branch} if isinstance(op, AddOp) else {}))
                          for op in self.model.ops],
                     stimuli=per)
        self.files[STREAM_INDEX] = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode("ascii")
        return self.files


def stream_files(vec_dir, pe: int, simd: int, tile_rows: int | None = None, stimuli=None) -> dict:
    """Every file of the stream directory of the set vec_dir: relative path -> bytes."""
    return StreamBuilder(vec_dir, pe, simd, tile_rows).build(stimuli)


