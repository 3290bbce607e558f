"""Stage 1, record: stream a corpus through the subject model and keep, per unit, its top, random and
quantile-sampled excerpts and its statistics (`recorder.py`, `streaming.py`, `tables.py`); read them back
as the records and splits the later stages use (`records.py`)."""
