"""The steered inference service: many users at once, each with their own preference mix.

The decoder itself (scheduler, runner, KV cache, sampler, text) is the core's
:mod:`steerlab.steering.engine`, the same one ``steerlab.steering.generate`` runs in-process;
this package serves it:

- ``vectors``: registry versions resolved (aliases re-read every few seconds) and cached as tensors;
- ``placement``: which model, on which device and dtype, over how many ranks;
- ``cpu``: linear weights prepacked for oneDNN when serving on the CPU;
- ``distributed``: tensor parallelism with DeepSpeed AutoTP, rank 0 broadcasting every call;
- ``service`` / ``server`` / ``cli``: ``steerlab.v1.InferenceService`` and ``steerlab inference serve``.
"""
