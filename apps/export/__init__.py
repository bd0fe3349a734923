"""The state export (ExportState): reads every app, so it belongs to none of them."""
