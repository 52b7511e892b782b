"""Whole models the later notebooks train, built from the course's reference parts
(``course_lib.reference``): a GPT decoder and a BERT encoder."""
