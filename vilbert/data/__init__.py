"""Datasets.

    vilbert.data.concap     Conceptual Captions pretraining samples (ConceptualCaptionsDataset,
                            ConcapPaths, SampleConfig, make_loader)
    vilbert.data.collate    the tokenise / pad / collate path of the task datasets
    vilbert.data.cache      the safe cache of tokenised task inputs

Nothing is imported here, so `import vilbert.data.<module>` loads only what it needs.
"""
