"""Checkpoints: one .npz file, no pickle, written atomically.

Layout of the archive (every entry a plain array; strings are 0-d unicode arrays):
    config            JSON of the ModelConfig
    meta              JSON of training metadata (stage, step, total steps, options,
                      the np.random.Generator state), or "{}"
    param/<name>      learnable parameters (weights, biases, gamma/beta, PReLU slopes,
                      quantizer intervals "<site>.interval")
    state/<name>      non-learned state (BN running statistics, DAIA records)
    adam/<name>       optimizer state (moments "m/<param>", "v/<param>", "step")
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import zipfile
from typing import NamedTuple

import numpy as np

from .files import temporary_prefix, write_atomic
from .models import init_model, upscale
from .models.srnet import conv_weight_count
from .models.config import ModelConfig
from .models.discriminator import PREFIX, disc_init, disc_layers

SECTIONS = ("param", "state", "adam")


class Checkpoint(NamedTuple):
    config: ModelConfig
    params: dict
    state: dict
    adam: dict
    meta: dict


@contextlib.contextmanager
def sigint_deferred():
    """Ctrl-C inside the block takes effect after it, so that a file being written is
    finished first. (A KeyboardInterrupt inside np.savez leaves zipfile's write handle
    open; closing the archive then raises a ValueError that hides the interrupt.)
    Only the main thread receives signals; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and previous is not signal.SIG_IGN:
        if callable(previous):
            previous(signal.SIGINT, None)   # Python's default handler raises KeyboardInterrupt
        else:
            raise KeyboardInterrupt


def save_checkpoint(path, ckpt: Checkpoint):
    """Write atomically: a temporary file in the same directory, then os.replace,
    so a killed process leaves either the old checkpoint or the new one. Ctrl-C
    while writing is raised once the new checkpoint is in place."""
    arrays = {"config": np.array(ckpt.config.to_json()),
              "meta": np.array(json.dumps(ckpt.meta, sort_keys=True))}
    for section, entries in zip(SECTIONS, (ckpt.params, ckpt.state, ckpt.adam)):
        for name, value in entries.items():
            arrays[f"{section}/{name}"] = np.asarray(value)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with sigint_deferred():
        write_atomic(path, lambda f: np.savez(f, **arrays), suffix=".npz")


def remove_stale_temporaries(path):
    """Delete the temporary files a killed writer of `path` left behind."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(temporary_prefix(path)):
                os.unlink(os.path.join(directory, name))


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint; a missing, corrupt or foreign file is a ValueError naming it."""
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path}: no such file")
    # np.load guesses the format from the content: a text file reads as "pickled data",
    # a .npy as one array. A .npz is a zip archive; anything else is refused by name.
    try:
        with open(path, "rb") as f:
            signature = f.read(4)
    except OSError as exc:
        raise ValueError(f"checkpoint {path}: cannot read it ({exc.strerror or exc})") from None
    if signature not in (b"PK\x03\x04", b"PK\x05\x06"):   # a zip file's first (or only) record
        raise ValueError(f"checkpoint {path}: not a .npz archive (not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"checkpoint {path}: not a readable .npz archive ({exc})") from None
    if "config" not in entries:
        raise ValueError(f"checkpoint {path}: no 'config' entry; not an fqsr_ref checkpoint")
    try:
        config = ModelConfig.from_json(str(entries.pop("config")))
        meta = json.loads(str(entries.pop("meta", "{}")))
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"checkpoint {path}: 'meta' is not a JSON object")
    sections = {s: {} for s in SECTIONS}
    for key, value in entries.items():
        section, _, name = key.partition("/")
        if section not in sections or not name:
            raise ValueError(f"checkpoint {path}: unexpected entry {key!r}")
        sections[section][name] = value
    ckpt = Checkpoint(config, sections["param"], sections["state"], sections["adam"], meta)
    check_consistent(ckpt, path)
    return ckpt


def expected_entries(config: ModelConfig, params: dict):
    """(params, state) templates of the model `config` describes: name -> (shape, dtype kind).

    Built from the model code itself (init_model adds the quantizer sites of the
    config); an SRGAN checkpoint may also hold its discriminator, whose size is read
    back from the "disc.*" parameters (ValueError if they do not make one).
    """
    rng = np.random.default_rng(0)
    want_params, want_state = init_model(config, rng)
    if config.arch == "srgan" and any(k.startswith(PREFIX) for k in params):
        convs = disc_layers(params)
        d_params, d_state = disc_init(rng, convs[0].cout, len(convs) // 2)
        want_params, want_state = {**want_params, **d_params}, {**want_state, **d_state}

    def template(entries):
        return {k: (np.shape(v), np.asarray(v).dtype.kind) for k, v in entries.items()}

    return template(want_params), template(want_state)


KIND_NAMES = {"f": "a float", "i": "an integer", "u": "an integer", "b": "a boolean"}


def _kind_ok(have: str, want: str) -> bool:
    same = {"i": "iu", "u": "iu"}.get(want, want)
    return have in same


def check_consistent(ckpt: Checkpoint, path):
    """ValueError (one line naming the file and the key) unless the arrays are exactly
    those the stored config's model needs: names, shapes and dtype kinds; the Adam
    state, when present, must match the parameters."""
    arch = f"{ckpt.config.arch} x{ckpt.config.scale} {ckpt.config.blocks} blocks " \
           f"{ckpt.config.channels} channels {ckpt.config.bits}"
    # The model is built below to compare names and shapes: first bound its size by the
    # file's (4x and a million weights of slack leave the exact check below to name a
    # missing or extra array), so that a config asking for 4000 channels is not allocated.
    stored, need = sum(int(np.size(v)) for v in ckpt.params.values()), conv_weight_count(ckpt.config)
    if need > 4 * stored + 10 ** 6:
        raise ValueError(f"checkpoint {path}: its config ({arch}) has {need} conv weights but the file "
                         f"holds {stored} parameter values; the config does not describe its arrays")
    for section, entries in (("param", ckpt.params), ("state", ckpt.state), ("adam", ckpt.adam)):
        for key, value in entries.items():
            value = np.asarray(value)
            if value.dtype.kind == "f" and value.dtype not in (np.float32, np.float64):
                raise ValueError(f"checkpoint {path}: {section}/{key} is {value.dtype}; checkpoints hold "
                                 f"float32 or float64")
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                bad = np.flatnonzero(~np.isfinite(value))
                raise ValueError(f"checkpoint {path}: {section}/{key} holds {value.flat[bad[0]]} at flat "
                                 f"index {bad[0]} ({bad.size} non-finite values)")
            if section == "param" and key.endswith(".interval") and value.dtype.kind == "f" \
                    and not np.all(value > 0):
                raise ValueError(f"checkpoint {path}: {section}/{key} is {value.ravel()[0]}; a quantizer "
                                 f"interval must be positive (Eq. 3)")
    try:
        want_params, want_state = expected_entries(ckpt.config, ckpt.params)
    except ValueError as exc:
        raise ValueError(f"checkpoint {path}: {exc}") from None
    checks = [("parameter", "param/", ckpt.params, want_params),
              ("state entry", "state/", ckpt.state, want_state)]
    if ckpt.adam:
        want_adam = {"step": ((), "i")}
        for key, (shape, _) in want_params.items():
            want_adam[f"t/{key}"] = ((), "i")
            want_adam[f"m/{key}"] = (shape, "f")
            want_adam[f"v/{key}"] = (shape, "f")
        checks.append(("optimizer entry", "adam/", ckpt.adam, want_adam))
    for what, prefix, have, want in checks:
        for key in want:   # in the model's order: the first layer that disagrees
            if key not in have:
                raise ValueError(f"checkpoint {path}: missing {what} {prefix}{key} "
                                 f"(its config is {arch})")
        for key in sorted(have):
            if key not in want:
                raise ValueError(f"checkpoint {path}: unexpected {what} {prefix}{key} "
                                 f"(its config is {arch})")
        for key, (shape, kind) in want.items():
            value = np.asarray(have[key])
            if value.shape != tuple(shape):
                raise ValueError(f"checkpoint {path}: {what} {prefix}{key} has shape "
                                 f"{value.shape} but its config ({arch}) needs {tuple(shape)}")
            if not _kind_ok(value.dtype.kind, kind):
                raise ValueError(f"checkpoint {path}: {what} {prefix}{key} has dtype {value.dtype}, "
                                 f"expected {KIND_NAMES.get(kind, kind)} array")


def load_upscaler(path):
    """A callable lr_uint8 (H, W, 3) -> sr_uint8 (sH, sW, 3) from a checkpoint file (the
    fake-quantized float model, `models.upscale`)."""
    ckpt = load_checkpoint(path)

    def sr_fn(lr_uint8):
        return upscale(ckpt.config, ckpt.params, ckpt.state, lr_uint8)

    sr_fn.scale = ckpt.config.scale
    sr_fn.config = ckpt.config   # evaluate tiles large images from it
    return sr_fn
