"""`python -m flexllm` runs the `flexllm` command."""
import sys

from .cli import main

sys.exit(main())
