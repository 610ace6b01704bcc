import sys

from folioscan.pipeline.cli import main

sys.exit(main())
