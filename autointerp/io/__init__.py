"""Moving data in and out: OpenAI `neuron_explainer` files (`export.py`, `imports.py`, `nx_json.py`) and
Parquet copies of every table (`parquet.py`)."""
