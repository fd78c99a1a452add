"""`python -m femopt`: the femopt command line."""

from femopt.cli import main

raise SystemExit(main())
