"""Console output shared by the command-line entry points."""

import logging


def log_plainly():
    """Short log lines ("WARNING: skipping x.avi: ...") instead of absl's long
    prefixes, through a plain handler that tqdm can keep clear of its bar;
    TensorFlow's own INFO chatter (checkpoint sharding...) is left out."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    for chatty in ("tensorflow", "absl"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
