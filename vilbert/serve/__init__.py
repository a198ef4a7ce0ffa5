"""A local web page over vilbert.predict: ask a ViLBERT checkpoint about a picture and see where it looks.

    python -m vilbert.serve --checkpoint CKPT --bert_model BERT [--answers label2ans.json] [extractor flags]
    python -m vilbert.serve --question-checkpoint A --expression-checkpoint B --caption-checkpoint C ...
    python -m vilbert.serve --demo results/demo --data data/demo        # `make serve`, after `make demo`

The page (http://127.0.0.1:8000/) takes a picture (an upload, or one of the --gallery folders')
and a question (the top answers with their probabilities), a referring expression (the chosen box
drawn, the runners-up faint) or captions (their alignment scores), and shows the text-to-region
co-attention of a chosen token as a heat map over the boxes (co-attention block and head
selectable), which checkpoint and head answered, and the seconds it took.

Every answer is a vilbert.predict.Predictor call (one Predictor per checkpoint, loaded at start);
pictures become regions through predict's extractor and feature cache, with the extractor flags
of `python -m vilbert.features extract`. With `--boxes gt`, a picture missing from the boxes file
gets a grid of boxes. Safe by default: it listens on 127.0.0.1, refuses uploads over
--max-upload-mb and pictures over --max-pixels (checked from the header, before decoding) with a
one-line message, names pictures only by ids it handed out (never a path from the browser), and
answers a bad request with an error, not a crash. Why Starlette and uvicorn: docs/SERVE.md.

Modules: pictures.py (gallery, uploads and their checks, pictures -> regions), app.py (Service:
the checkpoints and pictures; the Starlette routes), page.html (the page), __main__.py (the
command line). Needs the `serve` extra: pip install -e '.[serve]'.
"""

from vilbert.serve.app import Limits, Service, create_app
from vilbert.serve.pictures import PictureError, check_picture

__all__ = ["Limits", "PictureError", "Service", "check_picture", "create_app"]
