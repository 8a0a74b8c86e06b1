"""Command-line tools: checkpoint converters (`python -m rlpipe.tools.convert --help`)."""
