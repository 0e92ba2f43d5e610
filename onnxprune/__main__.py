"""`python -m onnxprune ...` is the `onnxprune` command."""

import sys

from .cli import main

sys.exit(main())
