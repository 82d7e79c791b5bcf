"""A worker process for the cross-process in-flight test: `count` Graph requests for one
mailbox, all at once (python -m tests.integrations.microsoft.mailbox_burst MAILBOX COUNT).
Prints how many failed."""

from __future__ import annotations

import sys
import threading

import django


def main(mailbox: str, count: int) -> int:
    django.setup()
    from integrations import graph  # noqa: PLC0415 - needs django.setup() first

    failures: list[str] = []
    start = threading.Barrier(count)

    def one() -> None:
        start.wait()
        try:
            graph.get(f"/users/{mailbox}/messages", params={"$top": "1"})
        except Exception as exc:  # reported to the test, which asserts on it
            failures.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(len(failures), *failures, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
