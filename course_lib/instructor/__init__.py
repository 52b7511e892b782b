"""Instructor commands: release the notebooks, autograde a class in parallel, write grades."""
