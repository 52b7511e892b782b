"""Reference implementations (answer keys) of the course's exercises.

Later notebooks import these instead of the learner's earlier answers, so a learner stuck in
one notebook can still do the next. Each is forbidden inside its own exercise.
"""
from .heads import batched_dot, merge_heads, split_heads

__all__ = ["split_heads", "merge_heads", "batched_dot"]
