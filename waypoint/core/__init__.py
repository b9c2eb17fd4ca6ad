"""The execution engine: workflow runs, steps, recovery. Speaks only to ``SystemStore``."""
