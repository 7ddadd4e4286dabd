import sys

from lightbox.cli import main

sys.exit(main())
