#!/usr/bin/env python3
"""Check a port's tensors against golden vectors: tools/verify_vectors.py GOLDEN_DIR PORT_DIR.

The same as `python -m fqsr_ref.verify`, runnable from a source checkout without
installing the package. Exit 0 all layers pass, 1 a mismatch, 2 unusable input.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fqsr_ref.verify import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
