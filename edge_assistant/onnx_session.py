"""One way to open an onnxruntime model (the wake word's and Piper's), with the
settings a small shared CPU needs and a one-line error naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ModelFileError

# onnxruntime's KleidiAI kernels give wrong batch-1 convolutions on some arm64
# builds (livekit-wakeword hit this: every score ~0); older versions ignore the key.
_DISABLE_KLEIDIAI = "mlas.disable_kleidiai"


def open_session(path: Path, what: str, threads: int = 1, memory_arena: bool = True) -> Any:  # onnxruntime.InferenceSession
    """A CPU session on ``threads`` threads, or ModelFileError naming ``what``.

    A few threads, so the model does not fight llama.cpp's threads for the cores.
    ``memory_arena`` off returns what a run allocated afterwards instead of keeping
    it for good: Piper needs hundreds of MiB for a long sentence.
    """
    import onnxruntime

    if not path.is_file():
        raise ModelFileError(f"{what} not found: {path}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = memory_arena
    options.add_session_config_entry(_DISABLE_KLEIDIAI, "1")
    options.log_severity_level = 3  # errors only: a bad file is reported by us, once
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"cannot load {what} {path}: {detail}") from None
