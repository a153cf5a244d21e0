"""The forms layer: record forms built from form layouts for one reader, without a request.

The web UI, wizards (``wizard``) and public forms share it; nothing here imports Flask or
``xrm.web``.  ``record_form`` builds (and caches per catalog version) a ``RecordForm``;
``RecordForm.bind`` holds one record and what was posted for it.
"""

from .layout import default_form, form_for, quick_create_form
from .record import (
    WIDGETS,
    BoundForm,
    FieldSpec,
    Reader,
    RecordForm,
    SectionSpec,
    TabSpec,
    fields_form,
    reader_for,
    record_form,
)

__all__ = [
    "WIDGETS",
    "BoundForm",
    "FieldSpec",
    "Reader",
    "RecordForm",
    "SectionSpec",
    "TabSpec",
    "default_form",
    "fields_form",
    "form_for",
    "quick_create_form",
    "reader_for",
    "record_form",
]
