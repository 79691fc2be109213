"""The preference and session service: each user's strengths and conversation, and the paper's
three interfaces for setting them.

- ``state``: the session, turn and calibration data (plain, immutable values);
- ``calibrate``: CALIBRATE, bisection over A/B comparisons;
- ``learn``: LEARN, strengths updated from what the user says (sentiment x direction);
- ``store``: sessions and turns on PostgreSQL or SQLite, one writer per session at a time;
- ``service`` / ``server`` / ``cli``: ``steerlab.v1.SessionService`` and ``steerlab sessions serve``.
"""
