"""``engine = "process"``: the scheduler in a child process, the facade in the host.

:mod:`~chronolog.process.engine` is the host's side, :mod:`~chronolog.process.child` the
scheduler process, :mod:`~chronolog.process.frames` and :mod:`~chronolog.process.messages`
what travels between them, :mod:`~chronolog.process.remote_executor` how runs of the
host's functions reach the host.
"""
