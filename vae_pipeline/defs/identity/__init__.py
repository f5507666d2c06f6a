"""Model identity and lineage: which data a model was trained on, which version a reference means."""
