"""`python -m unison.cli`."""

from unison.cli import main

main()
