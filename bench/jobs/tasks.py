def noop() -> None:
    """The baseline: a plain django-q2 task that does nothing."""
