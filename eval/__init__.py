"""Evaluation scripts (run as files: python eval/NAME.py) and the helpers they share."""
