"""The always-on part: watcher, persisted job queue, daemon loop, job handlers, executors and status."""
