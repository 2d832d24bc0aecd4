def main(argv=None) -> int:  # replaced below by the real CLI
    return 0
