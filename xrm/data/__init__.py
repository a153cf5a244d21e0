"""Data in and out of an organization: import of CSV and XLSX files, streaming export."""
