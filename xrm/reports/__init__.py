"""Reports: running the report definitions of the catalog (``catalog.reports``) for a
user, every figure computed in SQL by ``Records.aggregate`` under the user's scope and
field rules.  Storage and metadata only: the web and other front ends render the result."""

from .parameters import ParameterError, resolve_parameters
from .run import ReportError, ReportRefused, ReportResult, run_report, sees_report

__all__ = [
    "ParameterError",
    "ReportError",
    "ReportRefused",
    "ReportResult",
    "resolve_parameters",
    "run_report",
    "sees_report",
]
