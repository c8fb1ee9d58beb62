from moonmind_codex.cli import main
import sys

sys.exit(main())
