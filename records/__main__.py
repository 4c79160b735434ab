"""``python -m records inspect PATTERN``: a JSON summary of TFRecord shards."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from records.inspect import main  # noqa: E402

sys.exit(main(sys.argv))
