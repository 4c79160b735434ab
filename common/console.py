"""Console output shared by the command-line entry points: plain log lines,
TensorFlow imported without its start-up noise, and progress that shows as a
bar on a terminal and as periodic log lines elsewhere."""

import collections
import contextlib
import datetime
import errno
import logging
import math
import os
import re
import sys
import tempfile
import time

log = logging.getLogger(__name__)


def log_plainly():
    """Short log lines ("WARNING: skipping x.avi: ...") instead of absl's long
    prefixes, through a plain handler that tqdm can keep clear of its bar;
    TensorFlow's own INFO chatter (checkpoint sharding...) is left out."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    for chatty in ("tensorflow", "absl", "matplotlib"):  # matplotlib: "generated new fontManager"
        logging.getLogger(chatty).setLevel(logging.WARNING)


# What TensorFlow's C++ start-up prints to stderr before its logging is set up
# (so TF_CPP_MIN_LOG_LEVEL cannot hide it): informational lines; on a machine
# without an NVIDIA driver, a "failed call to cuInit" error that only says
# there is no GPU; at a model's first run, oneDNN's notice that it leaves
# boolean ops to another implementation; LiteRT's line at each interpreter. Errors of any other kind get through.
_STARTUP_INFO = re.compile(r"^(I\d{4} \d|WARNING: All log messages before absl::InitializeLog|"
                           r"To enable the following instructions:|INFO: Created TensorFlow Lite XNNPACK delegate)|"
                           r"oneDNN supports DT_BOOL only on platforms")
_NO_DRIVER_NOISE = re.compile(r"failed call to cuInit|Could not find cuda drivers|cuda_(driver|platform)\.cc")


def _has_nvidia_driver():
    return os.path.exists("/proc/driver/nvidia/version")


def startup_noise(line, has_driver):
    """True for a line of TensorFlow's start-up output that is not worth a user's attention."""
    return bool(_STARTUP_INFO.search(line)) or (not has_driver and bool(_NO_DRIVER_NOISE.search(line)))


@contextlib.contextmanager
def _stderr_captured(shown):
    """Runs the block with the process's stderr (file descriptor 2, where
    TensorFlow's C++ code writes) captured, then prints the captured lines for
    which ``shown(line, failed)`` is true (``failed``: the block raised).
    For short steps only (no progress bar is shown meanwhile)."""
    sys.stderr.flush()
    saved = os.dup(2)
    failed = True
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if line.strip() and shown(line, failed)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def tensorflow_startup_filtered():
    """Runs a block, then prints what it wrote to stderr except TensorFlow's
    start-up noise (see ``startup_noise``)."""
    has_driver = _has_nvidia_driver()
    return _stderr_captured(lambda line, failed: not startup_noise(line, has_driver))


def stderr_shown_on_failure():
    """Runs a block whose stderr is worth reading only if it fails (the
    LiteRT converter prints its settings at every pass)."""
    return _stderr_captured(lambda line, failed: failed)


def import_tensorflow():
    """Imports TensorFlow and probes for GPUs (which is when CUDA is
    initialised) without their start-up noise. Listing the physical devices
    leaves the runtime uninitialised, as a multi-worker strategy needs it.

    Returns:
      The ``tensorflow`` module.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with tensorflow_startup_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    return tf


# TensorFlow's error messages carry the internals of the op that failed
# ({{function_node __wrapped__IteratorGetNext_...}}, [Op:IteratorGetNext])
# around the cause ("corrupted record at 658").
_TENSORFLOW_INTERNALS = re.compile(r"\{\{function_node [^}]*\}\}|\[Op:\w+\]( name: \S*)?|\s*name:\s*$"
                                   r"|Error in user-defined function passed to \S+ transformation with iterator: "
                                   r"\S+: |assertion failed: ")


def tensorflow_error_text(error):
    """The cause of a TensorFlow error, in one line, without the internals."""
    message = str(getattr(error, "message", error)).strip()
    first = message.splitlines()[0] if message else type(error).__name__
    return re.sub(r"\s+", " ", _TENSORFLOW_INTERNALS.sub("", first)).strip() or type(error).__name__


def warm_up(model):
    """Runs a Keras model once on zeros, without the notices TensorFlow prints
    at a model's first run."""
    import numpy as np

    inputs = {tensor.name: np.zeros((1, *(size or 1 for size in tensor.shape[1:])), tensor.dtype)
              for tensor in model.inputs}
    with tensorflow_startup_filtered():
        model(inputs)


class UsageError(Exception):
    """A command used wrongly (a bad flag value, a missing argument)."""


# What a folder the user named can refuse a write with, and what to do about it.
_MAKE_ROOM = "Make room (or choose another folder)"
_WRITABLE = "Choose a writable folder (or make this one writable)"
UNWRITABLE = {errno.ENOSPC: ("the disk is full", _MAKE_ROOM),
              errno.EDQUOT: ("the disk quota is used up", _MAKE_ROOM),
              errno.EROFS: ("it is on a read-only file system", _WRITABLE),
              errno.EACCES: ("permission denied", _WRITABLE), errno.EPERM: ("permission denied", _WRITABLE)}


def unwritable_message(error):
    """One sentence for an OSError that says a path cannot be written (full,
    read-only, not permitted), or None for any other error."""
    if not isinstance(error, OSError) or error.errno not in UNWRITABLE:
        return None
    where = f"{error.filename}" if error.filename else "a file"
    cause, remedy = UNWRITABLE[error.errno]
    return f"cannot write {where}: {cause}. {remedy} and run the same command again: it goes on from what was finished."


def run_command(main, command):
    """``absl.app.run(main)``, with usage errors printed as the first and
    nearly only output (one line, and where to find the flags) instead of
    absl's page of help, exit status 1.

    Args:
      main: the entry point's ``main(argv)``, which raises ``UsageError``.
      command: how the user runs it (``"python -m extract"``).
    """
    from absl import app, flags

    options = sys.argv[1:sys.argv.index("--")] if "--" in sys.argv else sys.argv[1:]
    if any(option in ("-h", "-?", "--help", "-help", "--helpshort", "--helpfull") for option in options):
        # absl's own --help exits with status 1; help asked for is a success.
        app.usage(shorthelp="--helpfull" not in options, writeto_stdout=True)
        sys.exit(0)

    def checked_main(argv):
        try:
            check_finite_flags(flags.FLAGS)
            return main(argv)
        except UsageError as e:
            print(f"error: {e}\n({command} --help lists the flags)", file=sys.stderr)
            return 1
        except OSError as e:
            message = unwritable_message(e)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            return 1

    app.run(checked_main)


def check_number(flag, value, minimum=None, above=None, maximum=None, below=None, optional=False):
    """Refuses a flag's value that is not a finite number in range, naming
    the flag: the one check every numeric setting of every command goes
    through (in the config objects that library code uses too).

    Args:
      flag: the flag's name, without dashes.
      value: its value.
      minimum, maximum: inclusive bounds; above, below: exclusive bounds.
      optional: None is allowed (the setting's default is computed later).

    Raises:
      ValueError: ``--flag must be ..., got ...``.
    """
    if value is None and optional:
        return
    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
              f"<= {maximum:g}" if maximum is not None else "", f"< {below:g}" if below is not None else ""]
    expected = "a finite number" + (" " + " and ".join(filter(None, bounds)) if any(bounds) else "")
    valid = (isinstance(value, (int, float)) and math.isfinite(value)
             and (minimum is None or value >= minimum) and (above is None or value > above)
             and (maximum is None or value <= maximum) and (below is None or value < below))
    if not valid:
        raise ValueError(f"--{flag} must be {expected}, got {value}")


def check_finite_flags(flag_values):
    """Refuses ``inf`` and ``nan`` in every float flag of a command (absl
    parses them as numbers), before any setting is used.

    Raises:
      UsageError: naming the first such flag.
    """
    for name in sorted(flag_values):
        value = flag_values[name].value
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{name} must be a finite number, got {value}")


def a_few(names, limit=3):
    """"a, b, c and 4 more": the first ``limit`` of ``names``, and how many
    others, for messages that name what they are about without a flood."""
    names = [str(name) for name in names]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def seconds_since_start():
    """Wall time since this process started (its start-up included: the
    interpreter, imports), from the kernel's record where there is one."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


def _duration(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


class RecentRate:
    """How fast a count grows over the last ``window`` seconds (a moving
    window): after a stall, rates and times left follow what happens now, not
    the average since the start.

    Args:
      window: seconds of history that count.
      now: the time the count starts at 0.
    """

    def __init__(self, window, now):
        self.window = window
        self.total = 0
        self._samples = collections.deque([(now, 0)])

    def add(self, amount, now):
        self.total += amount
        self._samples.append((now, self.total))
        self._forget(now)

    def _forget(self, now):
        """Keeps one sample at or before the window's start (the count there)."""
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def per_second(self, now):
        """The rate over the window, up to ``now`` (idle time counts); 0 if
        nothing happened in it."""
        self._forget(now)
        first_time, first_total = self._samples[0]
        # The oldest sample kept may predate the window: the count stood at
        # its total until the next sample, so the window starts there.
        first_time = max(first_time, now - self.window)
        return (self.total - first_total) / max(now - first_time, 1e-9)


class Progress:
    """Progress of a long job: a tqdm bar when ``show_bar`` and stderr is a
    terminal; otherwise (``--progress=false``, output to a file) a log line
    every ``log_seconds`` with the count, rate and time left.

    Rates and the time left follow the last ``RATE_WINDOW`` seconds (the
    bar's own estimate is tqdm's moving average), so a stall long ago does not
    make them lie.

    Args:
      total: units of work in all.
      unit: name of a unit ("video", "step").
      description: what is being done.
      show_bar: a bar if stderr is a terminal.
      log_seconds: seconds between log lines when there is no bar.
      initial: units already done (a resumed job).
      work_unit: the name of a second quantity whose recent rate is shown
        ("frames": "155.0 frames/s"), counted by ``update(work=...)``.
      clock: the time source (for tests).
    """

    RATE_WINDOW = 60.0

    def __init__(self, total, unit, description, show_bar=True, log_seconds=30.0, initial=0, work_unit=None,
                 clock=time.monotonic):
        self.total, self.unit, self.description = total, unit, description
        self._done = initial
        self._log_seconds = log_seconds
        self._clock = clock
        self._started = self._last_log = clock()
        self._units = RecentRate(self.RATE_WINDOW, self._started)
        self._work_unit = work_unit
        self._work = RecentRate(self.RATE_WINDOW, self._started)
        self._note = ""
        self._bar = None
        if show_bar and sys.stderr.isatty():
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
            self._bar = tqdm(total=total, initial=initial, unit=unit, desc=description, dynamic_ncols=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def update(self, count=1, work=0):
        """``count`` more units done (and ``work`` more of the work unit)."""
        now = self._clock()
        self._done += count
        self._units.add(count, now)
        self._work.add(work, now)
        if self._bar is not None:
            self._bar.update(count)
            if self._work_unit:
                self._bar.set_postfix_str(self._notes(now), refresh=False)
        elif now - self._last_log >= self._log_seconds:
            self.log_line()

    def note(self, text):
        """Shows ``text`` (e.g. "loss 0.31") beside the count."""
        self._note = text
        if self._bar is not None:
            self._bar.set_postfix_str(self._notes(self._clock()), refresh=False)

    def _notes(self, now):
        rate = [f"{self._work.per_second(now):.1f} {self._work_unit}/s"] if self._work_unit else []
        return ", ".join(rate + ([self._note] if self._note else []))

    def log_line(self):
        """Logs where the job stands: count, share, notes, time left (at the recent rate)."""
        now = self._clock()
        self._last_log = now
        rate = self._units.per_second(now)
        left = f"ETA {_duration((self.total - self._done) / rate)}" if rate > 0 else "ETA unknown"
        share = 100.0 * self._done / self.total if self.total else 100.0
        notes = self._notes(now)
        log.info("%s: %d/%d %ss (%.0f %%)%s, %s elapsed, %s", self.description, self._done, self.total, self.unit,
                 share, f", {notes}" if notes else "", _duration(now - self._started), left)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._redirect.__exit__(None, None, None)
            self._bar = None


def define_progress_flags(flags):
    """The ``--progress`` and ``--progress_seconds`` flags, the same in every
    command (``flags`` is ``absl.flags``; the entry point then calls
    ``flags.adopt_module_key_flags(console)`` so that its ``--help`` lists them)."""
    flags.DEFINE_bool("progress", True, "Show a progress bar (on a terminal); --progress=false logs a progress "
                      "line every --progress_seconds instead, as does output to a file.")
    flags.DEFINE_float("progress_seconds", 30.0, "Seconds between progress lines when there is no bar.")
