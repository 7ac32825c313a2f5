"""The receiving app: WebRTC data channel → decode → window or recording. Same as the `sganc-recv` script.

    python receiver/app.py --signal ws://127.0.0.1:8765 --room demo --token s3cret --record call.mp4 --headless
"""

import sys

from sganc_stream.rtc.cli import recv_main

if __name__ == "__main__":
    sys.exit(recv_main())
