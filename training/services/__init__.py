"""Writes of the retraining domain, split by what they act on.

- ``batches``: gather resolved labels into a batch; approve / reject it.
- ``runs``: build the dataset, train, cancel, fail stale runs.
- ``registry``: register versions, evaluate, the promotion gate, rollback.
- ``guesses``: the champion guesses products; ``bootstrap``: the demo's first version.
"""
