"""``python -m churn.cli``."""

from churn.cli.app import main

main()
