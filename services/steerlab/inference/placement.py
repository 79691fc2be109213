"""Where the served model lives: which model, on which device, in which dtype, over how many
tensor-parallel ranks. All the model loaders need; the service's other settings stay apart."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Placement:
    model: str = "smollm2-135m"
    device: str = "auto"  # "auto": the GPU when there is one
    dtype: str = "auto"  # "auto": bfloat16 on a GPU, float32 on the CPU
    tensor_parallel: int = 1

    def torch_device(self) -> str:
        if self.device != "auto":
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"

    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device().startswith("cuda") else torch.float32
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype!r}")
        return DTYPES[self.dtype]
