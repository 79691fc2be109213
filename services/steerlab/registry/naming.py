"""How people refer to models and versions in messages and listings."""


def describe_model(name: str, digest: str) -> str:
    """``smollm2-135m 1a2b3c4d5e6f``: the model's name and the start of its weights digest."""
    return f"{name} {digest[:12]}" if name else digest[:12]
