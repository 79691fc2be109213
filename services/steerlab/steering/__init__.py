"""The steering core shared by every SteerLab service.

Extract a vector set from a contrastive dataset, save it, and steer generation with any mix
of vector sets, a different mix per row of a batch::

    from steerlab.steering import load_model, builtin_dataset, extract, generate

    lm = load_model("smollm2-135m")
    cost = extract(lm, builtin_dataset("cost"))
    cost.save("cost.safetensors")
    generate(lm, ["Plan a dinner in Rome."] * 2, vector_sets=[cost],
             strengths=[{"cost": -100}, {"cost": 100}])

Importing the package is cheap: each name loads its module (and torch) on first use, so a
command that needs no model never pays for one. The names are listed once, in ``__init__.pyi``.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
