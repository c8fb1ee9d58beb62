import sys

from moonmind_codex.cli import main

sys.exit(main())
