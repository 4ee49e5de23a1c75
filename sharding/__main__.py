import sys

from tte_scale.sharding.cli import main

sys.exit(main())
