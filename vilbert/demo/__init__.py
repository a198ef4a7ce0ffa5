"""The demo world: a synthetic data set in the real formats, so every pipeline runs offline.

    python -m vilbert.demo make-world --output data/demo --seed 0 [--size small|medium]
    python -m vilbert.demo check --data data/demo      (feature probe and text-only baseline)
    python -m vilbert.demo run ...                      (the whole demo, vilbert/demo/pipeline.py)

Modules: world (scenes, pictures, boxes, cls_prob), text (descriptions and captions), vqa, vcr,
refcoco, captions (Conceptual Captions and Flickr30k), chance (CHANCE.json, baselines, probe),
make (the layout on disk), check (measurements on a written world). Nothing here imports torch
at start-up.
"""
