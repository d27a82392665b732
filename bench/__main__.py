"""`python -m bench`: run every benchmark and print its figures."""

from __future__ import annotations

from bench import gateway, replay, strategies


def main() -> None:
    print("== strategies ==")
    strategies.main()
    print("== market gateway ==")
    gateway.main()
    print("== replay ==")
    replay.main()


if __name__ == "__main__":
    main()
