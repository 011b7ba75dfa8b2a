"""The writer thread of a batch run: classify, apply the policy, encode PNGs, write them and record them.

An image's manifest line is appended only after its PNG is in place (atomic rename), so a
killed run never leaves a line for a missing or half-written file.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safegen.core.errors import SafegenError
from safegen.core.io import atomic_write_bytes, path_inside, png_bytes
from safegen.jobs.manifest import ManifestWriter
from safegen.jobs.plan import FLAGGED_DIR, ImageJob
from safegen.jobs.policy import apply_policy

if TYPE_CHECKING:  # the runner hands itself in: its config, classifier and record builders
    from safegen.jobs.runner import BatchRunner


class ImageWriter(threading.Thread):
    """Classifies, encodes, writes and records one batch while the next is generated.

    At most one batch waits here: ``submit`` blocks until the previous one is on disk, so
    a kill never loses more than the batch being written and the one being generated.
    """

    def __init__(self, runner: BatchRunner, manifest: ManifestWriter):
        super().__init__(name="safegen-batch-writer", daemon=True)
        self.runner, self.manifest = runner, manifest
        self._queue: queue.Queue = queue.Queue()
        self._free = threading.Semaphore(1)
        self.error: BaseException | None = None
        self.busy = 0.0
        self.written = self.flagged = self.dropped = 0

    def submit(self, jobs: list[ImageJob], images: list[Any]) -> float:
        """Hand a batch over; returns the seconds spent waiting for the previous one."""
        start = time.perf_counter()
        self._free.acquire()
        waited = time.perf_counter() - start
        if self.error is not None:
            self._free.release()
            raise self.error
        self._queue.put((jobs, images))
        return waited

    def drain(self) -> float:
        """Wait until everything submitted is on disk; re-raise a writer failure."""
        start = time.perf_counter()
        self._free.acquire()
        self._free.release()
        if self.error is not None:
            raise self.error
        return time.perf_counter() - start

    def stop(self) -> None:
        self._queue.put(None)
        self.join()

    def run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            start = time.perf_counter()
            try:
                if self.error is None:
                    self._write_batch(*item)
            except BaseException as exc:  # handed to the main thread
                self.error = exc
            finally:
                self.busy += time.perf_counter() - start
                self._free.release()

    def _write_batch(self, jobs: list[ImageJob], images: list[Any]) -> None:
        r = self.runner
        verdicts = r.classifier.classify(images) if r.classifier is not None else [None] * len(images)
        if len(verdicts) != len(images):
            raise SafegenError(
                f"classifier '{r.config.check}' returned {len(verdicts)} results for {len(images)} images"
            )
        records = [
            self._write_image(job, image, verdict) for job, image, verdict in zip(jobs, images, verdicts, strict=True)
        ]
        self.manifest.append(records)
        self.written += len(records)

    def _write_image(self, job: ImageJob, image: Any, verdict: Any) -> dict[str, Any]:
        """Write one image as the policy decides (and its flagged original when asked); returns its manifest line."""
        r = self.runner
        unsafe = bool(verdict.unsafe) if verdict is not None else False
        out_image, decision = apply_policy(image, unsafe, r.config.on_unsafe)
        params = r.png_params(job)
        record = r.base_record(job)
        record["decision"] = decision
        record["safety"] = None
        if verdict is not None:
            record["safety"] = {"classifier": r.config.check, **verdict.to_dict()}
            params["safety"] = {"classifier": r.config.check, "unsafe": unsafe, "decision": decision}
        if unsafe and r.config.keep_flagged and decision != "keep":
            data = png_bytes(image, params)
            rel = f"{FLAGGED_DIR}/{Path(job.file).name}"
            atomic_write_bytes(path_inside(r.out, rel), data)
            record["flagged_file"] = rel
        if out_image is None:
            record["file"], record["sha256"] = None, None
            self.dropped += 1
        else:
            data = png_bytes(out_image, params)
            atomic_write_bytes(path_inside(r.out, job.file), data)
            record["sha256"] = hashlib.sha256(data).hexdigest()
        self.flagged += int(unsafe)
        return record
