"""`python -m minirlhf.grade`: see minirlhf/grade/__init__.py."""
import sys

from minirlhf.compile_cache import enable_compile_cache
from minirlhf.grade import main

enable_compile_cache()  # the grader's workers inherit it: a second grading reads their compiled checks back
sys.exit(main())
