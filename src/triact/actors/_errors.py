"""Exceptions raised by the actor runtime."""

from __future__ import annotations


class ActorError(Exception):
    """Base class of every error the actor runtime raises itself.

    Errors raised by a handler are not wrapped: the asker gets them as they are.
    """


class MailboxFullError(ActorError):
    """The actor's mailbox holds ``mailbox_size`` messages already.

    Nothing was queued. Retry later, or use :meth:`ActorRef.send`, which waits for
    room instead of failing.
    """


class ActorStoppedError(ActorError):
    """The actor no longer takes messages: it was stopped, it timed out as idle, or
    its supervisor is shutting down.

    A message refused with this error was never queued. A queued ``ask`` that gets it
    was not handled.
    """


class ActorFailedError(ActorStoppedError):
    """The actor crashed more often than its restart policy allows and was stopped.

    ``__cause__`` is the last crash.
    """


class ReentrantCallError(ActorError):
    """A handler waited on its own actor (``ask``, ``send`` or ``stop``).

    The actor handles one message at a time, so that call could never complete.
    Restructure the handler: call a plain method, or ``tell`` the actor instead.
    """
