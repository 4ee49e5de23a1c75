import sys

from sharding.cli import main

sys.exit(main())
