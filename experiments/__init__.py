"""The article's experiments, one script each (``python experiments/NAME.py``); see docs/experiments.md."""
