"""One module per notebook: each exercise's cases, reference, known mistakes and forbidden calls
(its hint is the notebook's Hint cell above the answer cell: course_lib/grading/hints.py).

``ex00_welcome.py`` holds the checks of ``notebooks/00_welcome``, and so on.
"""
