"""triact: an actor-model session runtime on Trio.

Each session is an actor that owns its state and handles its messages one at a
time. The generic runtime lives in :mod:`triact.actors`.
"""

from ._version import __version__

__all__ = ["__version__"]
