"""nbgrader configuration of the course (instructors: see README, "For instructors").

solutions/<id>/<id>.ipynb is the source; notebooks/<id>/ is the release learners get.
Autograding replaces nbgrader's Execute with the course's (crash/hang -> NOT GRADED) and adds
the sandbox that re-derives every test cell's verdict in a fresh process. `./course autograde`
applies the same pipeline in parallel; plain `nbgrader autograde` works too, one at a time.
"""
import os

from course_lib.instructor.settings import apply_course_settings

c = get_config()  # noqa: F821  (provided by nbgrader)
here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.root = here
apply_course_settings(c, solutions=os.path.join(here, "solutions"), release=os.path.join(here, "notebooks"))
