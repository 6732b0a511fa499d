import sys

from sosp.cli import main

sys.exit(main())
