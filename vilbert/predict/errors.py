"""The one error type of vilbert.predict."""


class PredictError(ValueError):
    """A problem with a checkpoint, a picture or a request; the message is one line."""
