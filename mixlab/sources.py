"""A lab's files as loaded: the base checkpoint, the experts' task vectors, the true-mixture checkpoints
and each benchmark's examples — each with the signature its files had when read. A change on disk is
noticed (:meth:`LabSources.reload`), and :meth:`LabSources.unchanged` tells whether a score computed from
these sources may be stored under their fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mixlab.checkpoint import Checkpoint, folder_fingerprint, load_base
from mixlab.errors import EvaluationError
from mixlab.evaluate import read_benchmark
from mixlab.experts import TaskVector, load_task_vector
from mixlab.fingerprints import file_signature, folder_signature
from mixlab.keys import benchmark_desc
from mixlab.lab import BenchmarkSpec, Lab


@dataclass
class BenchmarkData:
    """A benchmark's examples as last read, its description for cache keys (with the hash of those very
    bytes), the file's signature before the read, and (made once, by the engine) its tokenised items."""

    signature: tuple
    examples: list[dict]
    desc: dict
    items: list[dict] | None = None


class LabSources:
    _LOADED = ("base", "experts", "base_fp", "expert_fps", "models_fp")
    _FINGERPRINTS = ("base_fp", "expert_fps", "models_fp")

    def __init__(self, lab: Lab):
        self.lab = lab
        self._benchmarks: dict[str, BenchmarkData] = {}
        self._true_fps: tuple[tuple, dict[tuple[str, int], str]] | None = None
        self._files_sig: tuple | None = None  # the files the fingerprints were read from, while nothing is loaded

    @cached_property
    def base(self) -> Checkpoint:
        base = load_base(self._base_folder(), self.lab.root)
        self._forget_fingerprints()  # from now on, the fingerprints are those of what was loaded
        return base

    @cached_property
    def experts(self) -> list[TaskVector]:
        experts = [load_task_vector(e.name, self.lab.resolve(e.path), self.base) for e in self.lab.manifest.experts]
        self._forget_fingerprints()
        return experts

    def _base_folder(self) -> Path:
        return self.lab.resolve(self.lab.manifest.base, "base")

    def _forget_fingerprints(self) -> None:
        for name in self._FINGERPRINTS:
            self.__dict__.pop(name, None)
        self._files_sig = None

    def _files_signature(self) -> tuple:
        """Every file of the base's and the experts' folders as they are now (one stat each)."""
        folders = [self._base_folder(), *(self.lab.resolve(e.path) for e in self.lab.manifest.experts)]
        return tuple(folder_signature(f) if f.is_dir() else () for f in folders)

    def _unloaded(self) -> bool:
        """Nothing loaded yet: fingerprints come from the files alone (a page drawing cached scores)."""
        if "base" in self.__dict__ and "experts" in self.__dict__:
            return False
        if self._files_sig is None:
            self._files_sig = self._files_signature()  # taken before the files are read
        return True

    @cached_property
    def base_fp(self) -> str:
        """The base's content fingerprint, computed once per load (a reload forgets it); before anything is
        loaded, from its files alone (:func:`~mixlab.checkpoint.folder_fingerprint`: no tensor, no torch)."""
        if self._unloaded():
            return folder_fingerprint(self._base_folder(), "base", self.lab.root)
        return self.base.fingerprint

    @cached_property
    def expert_fps(self) -> list[str]:
        if self._unloaded():
            return [
                folder_fingerprint(self.lab.resolve(e.path), f"expert {e.name!r}", self.lab.root)
                for e in self.lab.manifest.experts
            ]
        return [e.fingerprint for e in self.experts]

    @cached_property
    def models_fp(self) -> str:
        """Fingerprint of the base and the experts, in order: proxy rows of another expert set never match."""
        h = hashlib.sha256(self.base_fp.encode())
        for fp in self.expert_fps:
            h.update(fp.encode())
        return h.hexdigest()

    def true_checkpoints(self) -> list[tuple[str, int, dict, TaskVector]]:
        """(label, replicate, weights, task vector) of every true-mixture checkpoint, read now: one per path,
        replicates (``paths``) numbered from 1 in their order, a single ``path`` as replicate 1."""
        return [
            (
                self.lab.true_mixture_name(t),
                r,
                self.lab.true_mixture_weights(t).as_dict(),
                load_task_vector(
                    self.lab.true_mixture_name(t) + (f" (replicate {r})" if t.paths else ""),
                    self.lab.resolve(p),
                    self.base,
                ),
            )
            for t in self.lab.manifest.true_mixtures
            for r, p in enumerate(t.checkpoints, 1)
        ]

    def true_fingerprints(self) -> dict[tuple[str, int], str]:
        """(label, replicate) → content fingerprint of each true-mixture checkpoint, re-read when a file in
        one of their folders changed (so tables never show a rewritten checkpoint's old score); from the files
        alone: no tensor is read."""
        trues = [
            ((self.lab.true_mixture_name(t), r), self.lab.resolve(p))
            for t in self.lab.manifest.true_mixtures
            for r, p in enumerate(t.checkpoints, 1)
        ]
        sig = tuple(folder_signature(f) for _, f in trues)
        if self._true_fps is None or self._true_fps[0] != sig:
            fps = {key: folder_fingerprint(f, f"true mixture {key[0]!r}", self.lab.root) for key, f in trues}
            self._true_fps = (sig, fps)
        return self._true_fps[1]

    def changed(self) -> bool:
        """True once a file of the base or an expert may differ from what was loaded."""
        if "experts" not in self.__dict__:  # fingerprints read from the files: are they still as they were?
            return self._files_sig is not None and self._files_sig != self._files_signature()
        loaded = (self.base.loaded_signature, [e.loaded_signature for e in self.experts])
        try:
            return loaded != (self.base.signature(), [e.signature() for e in self.experts])
        except OSError:  # a file went away
            return True

    def reload(self) -> bool:
        """Forget the base and experts if their files changed (they load again when next asked for), and
        the benchmarks' tokenised items, which the base's tokenizer and config made."""
        if not self.changed():
            return False
        for name in self._LOADED:
            self.__dict__.pop(name, None)
        self._files_sig = None
        self._benchmarks.clear()
        return True

    def benchmark(self, b: BenchmarkSpec) -> BenchmarkData:
        """The benchmark as its file is now: re-read when the file changed, so the key's data hash is
        always the hash of the examples that are scored."""
        path = self.lab.resolve(b.data, f"benchmark {b.name!r} data", want_file=True)
        cur = self._benchmarks.get(b.name)
        if cur is None or cur.signature != self._signature(b, cur.examples):
            data_sig, _, include_sig = self._signature(b, [])  # taken before the files are read
            examples, digest = read_benchmark(path, b)
            image_sigs = ()
            if any("image" in ex for ex in examples):  # the images are what is scored as much as the rows
                image_digest, image_sigs = self._images(b, examples)
                digest = hashlib.sha256(f"{digest}:{image_digest}".encode()).hexdigest()
            if b.include_path is not None:  # an lm-eval task: every file of it (YAML, includes, helpers) is what it is
                from mixlab.harness import task_digest

                include = self.lab.resolve(b.include_path, f"benchmark {b.name!r} include_path")
                digest = hashlib.sha256(f"{digest}:{task_digest(include, self.lab.root)}".encode()).hexdigest()
            sig = (data_sig, image_sigs, include_sig)
            cur = self._benchmarks[b.name] = BenchmarkData(sig, examples, benchmark_desc(b, digest))
        return cur

    def _images(self, b: BenchmarkSpec, examples: list[dict]) -> tuple[str, tuple]:
        """Resolve each row's image inside the lab (into ``_image``); the hash of their bytes in row order,
        and each image's signature taken before it was read."""
        h, sigs = hashlib.sha256(), []
        for i, ex in enumerate(examples):
            if "image" not in ex:
                raise EvaluationError(f"benchmark {b.name!r}: row {i + 1} has no 'image' (its other rows have one)")
            path = self.lab.resolve(ex["image"], f"benchmark {b.name!r} row {i + 1} image", want_file=True)
            ex["_image"] = str(path)
            sigs.append(file_signature(path))
            h.update(path.read_bytes())
        return h.hexdigest(), tuple(sigs)

    def _signature(self, b: BenchmarkSpec, examples: list[dict]) -> tuple:
        """The benchmark's files as they are now: (its data, the images its rows name, an lm-eval task's
        files: its folder's and those its YAMLs include or import)."""
        images = tuple(file_signature(Path(ex["_image"])) for ex in examples if "_image" in ex)
        include = ()
        if b.include_path is not None:  # the task's whole closure: an edited included YAML is a change too
            from mixlab.harness import task_files

            include = tuple(file_signature(f) for f in task_files(self.lab.resolve(b.include_path), self.lab.root))
        return file_signature(self.lab.resolve(b.data)), images, include

    def unchanged(self, b: BenchmarkSpec, scored: BenchmarkData, checkpoint: TaskVector | None = None) -> bool:
        """Whether the sources of a score just computed are still as they were read: the base, the
        experts, the ``checkpoint`` scored (if any) and the benchmark's data (``scored``: as it was read)."""
        return not (
            self.changed()
            or self._signature(b, scored.examples) != scored.signature
            or (checkpoint is not None and checkpoint.signature() != checkpoint.loaded_signature)
        )

    def warnings(self) -> list[str]:
        """Doubts about the experts that do not stop a merge (loads nothing)."""
        experts = self.__dict__.get("experts", [])
        out = [w for e in experts for w in e.warnings]
        seen: dict[str, str] = {}
        for e in experts:
            if e.fingerprint in seen:
                out.append(f"experts {seen[e.fingerprint]!r} and {e.name!r} have identical content")
            seen.setdefault(e.fingerprint, e.name)
        return out
