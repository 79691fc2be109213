"""Reproduce the paper's computational experiments E1-E4 (``steerlab experiments run``).

- E1 (:mod:`.e1_strength`): strength sweep per dimension; the three extraction methods compared;
- E2 (:mod:`.e2_prompting`): a preference stated in the prompt, steering, and both;
- E3 (:mod:`.e3_composition`): culture and age steered together; 5x5 cross-talk;
- E4 (:mod:`.e4_learn`): simulated users converge through the session service's LEARN loop.

:func:`.runner.run_experiments` runs any of them and writes data, plots and a report.
"""
