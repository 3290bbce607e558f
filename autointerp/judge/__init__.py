"""A judge trained here (docs/method.md s.11): rule units with known truth (rules.py), a small encoder trained to
predict every token's activation from (explanation, excerpt) (model.py, train.py), measured on rule families it
never saw (evaluate.py). Registered as the `trained` simulator (autointerp/simulate/trained.py)."""
