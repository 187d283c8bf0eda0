"""`python -m minirlhf.grade`: see minirlhf/grade/__init__.py."""
import sys

from minirlhf.grade import main

sys.exit(main())
