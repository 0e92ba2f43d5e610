"""`python -m onnxprune ...` is the `onnxprune` command."""

import sys

from onnxprune.cli.main import main

sys.exit(main())
