"""The steered inference service: many users at once, each with their own preference mix.

- ``engine``: the scheduler: a queue, continuous batching, cancellation, deadlines, limits;
- ``runner``: the model side: one prefill or decode forward for the whole batch;
- ``batch`` / ``steering``: the batch's KV cache and its per-row steering deltas, which join
  and leave with their rows;
- ``sampler`` / ``text``: every row's next token in one operation; incremental text and stop strings;
- ``vectors``: registry versions resolved (aliases re-read every few seconds) and cached as tensors;
- ``distributed``: tensor parallelism with DeepSpeed AutoTP, rank 0 broadcasting every call;
- ``service`` / ``server`` / ``cli``: ``steerlab.v1.InferenceService`` and ``steerlab inference serve``.
"""
