"""Phase 2 of an extraction, shared by every runner: extract shards.

Data flow, for the shards given:

  decode pool (threads, one ffmpeg process per video, a few videos ahead,
  taken as they finish) -> the backbone's stage -> shard writer (padded
  SequenceExample per video; the shard is committed when its last video is
  done).

The stage depends on the kind of backbone: an image CNN gets a frame
batcher (packs frames of consecutive videos into full batches, one CNN call
per ``batch_size`` frames); a streaming video CNN gets video streams (each
video read whole, frame by frame from a fresh state, by one of the
backbone's streams, several videos at once).

ffmpeg runs in separate processes and LiteRT and TensorFlow release the GIL,
so decoding the next videos overlaps with the CNN working on the current ones.
The local runner hands all its pending shards to one call (frames of
consecutive shards share batches); a distributed runner calls it once per
shard.

Idempotent: a shard already committed is left as it is; an attempt that
fails deletes its unfinished file; an attempt killed outright leaves a hidden
``.partial`` file that the next run deletes. Every video of a shard ends up
in exactly one committed shard or in the shard's list of errors.
"""

import collections
import concurrent.futures
import itertools
import logging

import numpy as np

from extract.video import DecodeError, decode_frames, file_state, stop_decoders
from records import files, schema, writer

log = logging.getLogger(__name__)


def _decode_ahead(jobs, config, image_size, workers, in_flight):
    """Decodes videos in a thread pool, yielding ``(job, (Decoded, thumbnail
    JPEG) or DecodeError)`` as each finishes (the thumbnail is made in the
    pool too, off the CNN's thread).

    At most ``in_flight`` videos are being decoded or waiting, which bounds
    memory. Taking them in the order they finish (not the order given) keeps
    one slow video (a long 1080p clip) from stalling the CNN while the other
    workers have finished videos ready.
    """

    def decode(job):
        try:
            decoded = decode_frames(job[1].path, config.fps, config.seconds, image_size, config.decode_timeout)
            return decoded, schema.thumbnail_jpeg(decoded.frames)
        except DecodeError as e:
            return e
        except FileNotFoundError as e:  # vanished, a dangling link: retried if it comes back
            return DecodeError(f"cannot read file: {e}")
        except OSError as e:  # a read error (a network file system...): worth another try
            return DecodeError(f"cannot read file: {e}", transient=True)

    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="decode")
    finished = False
    try:
        jobs = iter(jobs)
        running = {pool.submit(decode, job): job for job in itertools.islice(jobs, in_flight)}
        while running:
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                for next_job in itertools.islice(jobs, 1):
                    running[pool.submit(decode, next_job)] = next_job
                yield job, future.result()
        finished = True
    finally:
        if not finished:  # interrupted, or the CNN failed: end the decoders now rather than wait for them
            stop_decoders()
        pool.shutdown(wait=True, cancel_futures=True)


class _PendingVideo:
    def __init__(self, item, frames):
        self.item = item
        self.frames = frames
        self.features = None
        self.batched = 0  # frames already handed to the CNN

    @property
    def all_batched(self):
        return self.batched == len(self.frames)


class FrameBatcher:
    """Packs the frames of consecutive videos into batches of ``batch_size``.

    A long video spans several batches and a batch holds frames of several
    videos, so every CNN call but the last is full. Videos come out complete,
    in the order they went in.
    """

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self._videos = collections.deque()
        self._waiting_frames = 0

    def add(self, item, frames):
        self._videos.append(_PendingVideo(item, frames))
        self._waiting_frames += len(frames)

    def has_full_batch(self):
        return self._waiting_frames >= self.batch_size

    def has_frames(self):
        return self._waiting_frames > 0

    def run_batch(self, compute_features):
        """Runs ``compute_features`` on the next batch of (up to) ``batch_size`` frames.

        Returns:
          ``(item, features [num_frames, D])`` for each video this batch completed.
        """
        slices = []
        room = self.batch_size
        for video in self._videos:
            if room == 0:
                break
            if video.all_batched:
                continue
            start = video.batched
            video.batched = min(len(video.frames), start + room)
            slices.append((video, start, video.batched))
            room -= video.batched - start
        features = compute_features(np.concatenate([v.frames[start:stop] for v, start, stop in slices]))
        self._waiting_frames -= len(features)
        offset = 0
        for video, start, stop in slices:
            if video.features is None:
                video.features = np.empty((len(video.frames), features.shape[1]), np.float32)
            video.features[start:stop] = features[offset:offset + stop - start]
            offset += stop - start
        # The CNN call is synchronous: a video whose frames have all been
        # batched has all its features now.
        done = []
        while self._videos and self._videos[0].all_batched:
            video = self._videos.popleft()
            done.append((video.item, video.features))
        return done


class _BatchStage:
    """An image CNN's stage: full batches of frames of consecutive videos."""

    def __init__(self, backbone, batch_size):
        self._backbone = backbone
        self._batcher = FrameBatcher(batch_size)

    def add(self, item, frames):
        """Takes a video; returns ``(item, features)`` of the videos finished meanwhile."""
        self._batcher.add(item, frames)
        done = []
        while self._batcher.has_full_batch():
            done += self._batcher.run_batch(self._backbone)
        return done

    def finish(self):
        """Runs what is left; returns the videos it finished."""
        done = []
        while self._batcher.has_frames():
            done += self._batcher.run_batch(self._backbone)
        return done

    def close(self):
        pass


class _StreamStage:
    """A streaming CNN's stage: each video read whole by one of the
    backbone's streams, as many videos at once as it has streams (and as
    many again waiting, so that no stream idles while a video is handed
    over); finished videos are handed on as they finish."""

    def __init__(self, backbone):
        self._backbone = backbone
        self._pool = concurrent.futures.ThreadPoolExecutor(backbone.streams, thread_name_prefix="stream")
        self._running = {}
        self._most = 2 * backbone.streams

    def add(self, item, frames):
        """Takes a video; returns ``(item, features)`` of the videos finished meanwhile."""
        self._running[self._pool.submit(self._backbone.video_features, frames)] = item
        if len(self._running) >= self._most:
            concurrent.futures.wait(self._running, return_when=concurrent.futures.FIRST_COMPLETED)
        return self._take([future for future in self._running if future.done()])

    def finish(self):
        """Waits for the videos under way; returns them."""
        concurrent.futures.wait(self._running)
        return self._take(list(self._running))

    def _take(self, futures):
        return [(self._running.pop(future), future.result()) for future in futures]

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)


def _fingerprint(path):
    """The video file's ``files.content_fingerprint``, or None if it went
    away after it was decoded (its features are still good)."""
    try:
        return files.content_fingerprint(path)
    except OSError:
        return None


class _ShardsUnderWay:
    """Writers of the shards being extracted; each shard is committed as soon
    as the last of its videos is written or has failed."""

    def __init__(self, output_dir, shards, config):
        self._output_dir = output_dir
        self._config = config
        self._writers = {}
        self._unresolved = {shard.name: len(shard.videos) for shard in shards}

    def _writer(self, shard):
        if shard.name not in self._writers:
            self._writers[shard.name] = writer.ShardWriter(self._output_dir, shard.name)
        return self._writers[shard.name]

    def _resolved(self, shard):
        self._unresolved[shard.name] -= 1
        if self._unresolved[shard.name] == 0:
            self._writers.pop(shard.name).commit()

    def write(self, shard, video, features, warning, thumbnail):
        config = self._config
        example = schema.encode_video(video.video_id, video.label, video.label_name, features,
                                      config.max_frames, config.fps, config.dtype, thumbnail, video.group)
        self._writer(shard).write(example, video.video_id, video.label, len(features), warning, video.group,
                                  _fingerprint(video.path))
        self._resolved(shard)

    def fail(self, shard, video, error):
        self._writer(shard).record_error(video.video_id, str(error), error.transient, file_state(video.path))
        self._resolved(shard)

    def abandon(self):
        """Deletes the unfinished shards' files (after a failure)."""
        for shard_writer in self._writers.values():
            shard_writer.abandon()
        self._writers.clear()


class _NoProgress:
    def update(self, count=1, work=0):
        pass


def extract_shards(shards, output_dir, backbone, config, progress=None):
    """Extracts ``shards`` and commits each as soon as its last video is done.

    Args:
      shards: ``plan.Shard`` list; those already committed are skipped.
      output_dir: the output folder.
      backbone: a ready ``backbones.Backbone`` (or anything with its
        ``image_size``, ``streaming`` and ``__call__`` and
        ``default_batch_size`` for an image CNN, ``video_features`` and
        ``streams`` for a streaming one).
      config: the ``plan.ExtractConfig``.
      progress: gets ``update(1, work=frames)`` per video (a
        ``console.Progress`` counting frames as its work); None for none.

    Returns:
      ``(videos, frames)`` extracted by this call.
    """
    progress = progress or _NoProgress()
    shards = [shard for shard in shards if writer.read_committed_index(output_dir, shard.name) is None]
    jobs = [(shard, video) for shard in shards for video in shard.videos]
    under_way = _ShardsUnderWay(output_dir, shards, config)
    stage = _StreamStage(backbone) if backbone.streaming else _BatchStage(backbone, config.batch_size_for(backbone))
    frames_done = 0

    def write(finished_videos):
        nonlocal frames_done
        for (shard, video, warning, thumbnail), features in finished_videos:
            under_way.write(shard, video, features, warning, thumbnail)
            frames_done += len(features)
            progress.update(1, work=len(features))

    decoded = _decode_ahead(jobs, config, backbone.image_size, config.decoders(), in_flight=config.videos_in_flight())
    try:
        for (shard, video), outcome in decoded:
            if isinstance(outcome, DecodeError):
                log.warning("skipping %s: %s", video.video_id, outcome)
                under_way.fail(shard, video, outcome)
                progress.update(1)
                continue
            result, thumbnail = outcome
            if result.warning:
                log.warning("%s: %s (kept %d frames)", video.video_id, result.warning, len(result.frames))
            write(stage.add((shard, video, result.warning, thumbnail), result.frames))
        write(stage.finish())
    except BaseException:
        under_way.abandon()
        raise
    finally:
        decoded.close()  # now, not when the traceback lets go of it: an interrupt ends the decoders at once
        stage.close()
    return len(jobs), frames_done
