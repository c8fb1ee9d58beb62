import sys

from moonmind_codex.cli.app import main

sys.exit(main())
