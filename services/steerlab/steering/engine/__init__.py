"""The decoder: continuous batching with per-row steering, used in-process by the core's
:func:`~steerlab.steering.generate`, the experiments and ``steerlab generate``, and behind gRPC
by the inference service. One decoder, so research numbers are what users get.

- :mod:`.scheduler`: :class:`InferenceEngine`, the scheduler thread: admission, limits, events;
- :mod:`.runner`: :class:`ModelRunner`, one prefill or decode forward for the whole batch;
- :mod:`.kv`: the batch's KV cache, mask and positions as rows join and leave;
- :mod:`.sampler`: every row's next token in one batched operation, each with its own parameters;
- :mod:`.text`: incremental detokenising and stop strings.
"""

from .runner import ModelRunner
from .scheduler import (
    EngineSettings,
    Event,
    Failed,
    Finished,
    GenerationRequest,
    InferenceEngine,
    TextDelta,
)

__all__ = [
    "EngineSettings",
    "Event",
    "Failed",
    "Finished",
    "GenerationRequest",
    "InferenceEngine",
    "ModelRunner",
    "TextDelta",
]
