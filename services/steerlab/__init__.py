"""SteerLab: personalise LLMs with preference-based activation steering."""

__version__ = "0.1.0"
