import sys

from lightbox.operator.main import main

sys.exit(main())
