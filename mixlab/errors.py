"""The exception hierarchy: every error a user can cause is a MixlabError with a message that names
the thing, the bad value and the fix. Pages turn it into ``st.error``; the CLI into one line."""

from __future__ import annotations


class MixlabError(Exception):
    """Base of every error mixlab raises on bad input or state."""


class ManifestError(MixlabError):
    """A lab manifest (lab.toml) or a path it names is invalid."""


class ExpertError(MixlabError):
    """A checkpoint or adapter cannot be loaded or does not fit the base model."""


class MixtureWeightsError(MixlabError):
    """Mixture weights are not a point of the simplex."""


class MergeError(MixlabError):
    """A merge method or its parameters are invalid."""


class EvaluationError(MixlabError):
    """A benchmark or evaluator cannot run."""


class CacheError(MixlabError):
    """The evaluation cache cannot be read or written."""


class Cancelled(MixlabError):
    """A long job was cancelled by its caller."""


class JobError(MixlabError):
    """A recorded job cannot be resumed: its record is corrupt, or another process has it."""


class StudyError(MixlabError):
    """A search study cannot be used: its file is unusable, or its name belongs to another search."""
