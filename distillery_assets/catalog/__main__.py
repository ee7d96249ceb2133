import sys

from distillery_assets.catalog.cli import main

sys.exit(main())
