"""Prompt data, the Sample record, chat templates and the offline tiny model/task maker."""
