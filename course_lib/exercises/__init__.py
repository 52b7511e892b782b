"""One module per notebook: each exercise's cases, reference, known mistakes and hint.

``ex00_welcome.py`` holds the checks of ``notebooks/00_welcome``, and so on.
"""
