"""chronolog: an embeddable, event-sourced task scheduler and housekeeper."""

from chronolog.errors import ChronologError

__version__ = "0.1.0"

__all__ = ["ChronologError", "__version__"]
