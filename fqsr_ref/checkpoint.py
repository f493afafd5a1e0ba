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

import json
import os
import tempfile
import zipfile
from typing import NamedTuple

import numpy as np

from .models.config import ModelConfig

SECTIONS = ("param", "state", "adam")


class Checkpoint(NamedTuple):
    config: ModelConfig
    params: dict
    state: dict
    adam: dict
    meta: dict


def save_checkpoint(path, ckpt: Checkpoint):
    """Write atomically: a temporary file in the same directory, then os.replace,
    so a killed process leaves either the old checkpoint or the new one."""
    arrays = {"config": np.array(ckpt.config.to_json()),
              "meta": np.array(json.dumps(ckpt.meta, sort_keys=True))}
    for section, entries in zip(SECTIONS, (ckpt.params, ckpt.state, ckpt.adam)):
        for name, value in entries.items():
            arrays[f"{section}/{name}"] = np.asarray(value)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def temporary_prefix(path) -> str:
    return "." + os.path.basename(path) + ".tmp-"


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
    sections = {s: {} for s in SECTIONS}
    for key, value in entries.items():
        section, _, name = key.partition("/")
        if section not in sections or not name:
            raise ValueError(f"checkpoint {path}: unexpected entry {key!r}")
        sections[section][name] = value
    return Checkpoint(config, sections["param"], sections["state"], sections["adam"], meta)
