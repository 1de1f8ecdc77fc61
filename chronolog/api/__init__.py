"""The ways in besides the Python facade: HTTP, AI-agent function calling, MCP.

Each door is thin: it validates, calls the :class:`~chronolog.service.SchedulerService`,
and shapes the answer. No business logic lives here.
"""
