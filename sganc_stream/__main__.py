import sys

from sganc_stream.cli import main

sys.exit(main())
