"""Errors whose text is safe to show a user as it is.

Anything raised from here means the request was bad or cannot be served; the CLI prints it as one
`error:` line with exit status 2, the bot shows it to the user who asked. Any other exception is a bug:
it is logged with its traceback and the user gets a generic answer.
"""


class EtudeError(Exception):
    """Base of every error whose message is meant for the user."""


class BadOption(EtudeError):
    """An option out of range or of the wrong kind."""


class BadSeed(EtudeError):
    """A seed file that cannot be read as music within the limits."""


class BadData(EtudeError):
    """Training or evaluation data that holds no usable music."""


class ModelNotFound(EtudeError):
    """A model folder that is missing or incomplete."""


class RenderError(EtudeError):
    """Audio or picture output that cannot be produced (no FluidSynth, no soundfont, a timeout)."""


def reference(job_id: str | None = None) -> str:
    """The reference a user quotes and the log carries: a job's id cut to 8 characters, else a fresh one."""
    import uuid

    return (job_id or uuid.uuid4().hex)[:8]


def went_wrong(ref: str) -> str:
    """The one answer to a failure that is not the user's: generic, with the reference the log holds."""
    return f"something went wrong (ref {ref})"
