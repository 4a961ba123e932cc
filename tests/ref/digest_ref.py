#!/usr/bin/env python3
"""Reference digests from Python pyzor 1.1.2, for the differential tests.

Usage: digest_ref.py < PATHS    (one file path per line)

For each file, in input order, prints one JSON object on one line:
  {"file": PATH, "digest": HEX, "predigest": [LINE, ...], "lines": [LINE, ...]}
where digest is `pyzor.digest.DataDigester(email.message_from_bytes(data))`,
predigest is the lines `pyzor predigest` (PrintingDataDigester) would
print for that message, and lines is every normalised line long enough to
count, before the selection; or, when Python itself raises:
  {"file": PATH, "error": "ExceptionName: message"}
"""

import email
import json
import sys

from pyzor.digest import DataDigester


class CollectingDataDigester(DataDigester):
    """PrintingDataDigester, collecting the lines instead of printing them."""

    def __init__(self, msg):
        self.lines = []
        self.counted = []
        super().__init__(msg)

    def should_handle_line(self, s):
        # Every line DataDigester keeps, as it encodes it.
        handled = super().should_handle_line(s)
        if handled:
            self.counted.append(s.encode("utf8", "ignore").decode("utf8"))
        return handled

    def handle_line(self, line):
        # Exactly what PrintingDataDigester.handle_line prints.
        self.lines.append(line.decode("utf8"))
        super().handle_line(line)


def main():
    out = sys.stdout
    for path in sys.stdin.read().splitlines():
        if not path:
            continue
        with open(path, "rb") as f:
            data = f.read()
        try:
            digester = CollectingDataDigester(email.message_from_bytes(data))
            record = {"file": path, "digest": digester.value, "predigest": digester.lines,
                      "lines": digester.counted}
        except Exception as e:  # Python's own failure: the test skips these.
            record = {"file": path, "error": "%s: %s" % (type(e).__name__, e)}
        out.write(json.dumps(record) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
