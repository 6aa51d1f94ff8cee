import sys

from progress_relay.cli.main import main

sys.exit(main())
