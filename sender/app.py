"""The sending app: camera (or clip) → align → encode → WebRTC data channel. Same as the `sganc-send` script.

    python sender/app.py --signal ws://127.0.0.1:8765 --room demo --token s3cret --camera 0
"""

import sys

from sganc_stream.rtc.cli import send_main

if __name__ == "__main__":
    sys.exit(send_main())
