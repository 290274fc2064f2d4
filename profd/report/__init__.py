"""The nightly report (values, storage, charts, HTML, text) and mail."""
