"""The neuron viewer: a self-contained static HTML site per model, built from the store with Jinja2.

`index.html` lists the model's neurons (sortable, filterable by layer); `neurons/<layer>-<neuron>.html`
shows a neuron's explanations and scores, its stats, and its top and random excerpts as token heat maps,
with the simulator's predictions under the test-split excerpts it saw (`pages.py` what, `site.py` how,
`server.py` serving on 127.0.0.1).
"""
