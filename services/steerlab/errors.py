"""The root of SteerLab's errors; importing it costs nothing (no torch), so any command can."""


class SteerLabError(Exception):
    """Base class of every error SteerLab raises on bad input. Its message says what to do."""
