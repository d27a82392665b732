"""`python -m bench`: run every benchmark and print its figures."""

from __future__ import annotations

from bench import strategies


def main() -> None:
    print("== strategies ==")
    strategies.main()


if __name__ == "__main__":
    main()
